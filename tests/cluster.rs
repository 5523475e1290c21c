//! Issue 12 (Cluster I), the proof with real processes on loopback: one
//! `streamcache master` and three nodes (`streamcache serve` with
//! `[cluster]`), the GStreamer origin, ffmpeg/ffprobe and gst-launch
//! players that follow the master's `302` to a node.
//!
//! - 30 players of one uncached title via the master share one origin PLAY
//!   and decode frame for frame as a direct pull (gst-launch among them).
//! - Titles cached complete on one node only send their players there, and
//!   the origin sees nothing new.
//! - 6 titles × 10 players and 20 more with every node at 25 sessions: no
//!   node above its cap, the overflow refused with 503 (or 453).
//! - A mount with users: 401 at the master without credentials, 302 with;
//!   gst-launch's rtspsrc authenticates at both and plays.
//!
//! Faults (a node or the master killed, bad peers on the control port) are
//! in `cluster_faults.rs`.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use support::*;

const FRAME_RATE: usize = 25;

/// An origin serving the `secs` title at `/vod/NAME` for each of the names
/// the tests here use: each a title (a cache key) of its own.
fn titles_origin(secs: u32) -> Origin {
    Origin::start(OriginOpts::new().media(test_media(secs)).titles(&[
        "thirty", "a", "b", "c", "cap0", "cap1", "cap2", "cap3", "cap4", "cap5", "auth",
    ]))
}

/// `session started` lines in a node's log: the players it served.
fn sessions_started(node: &Node) -> usize {
    node.logs().matches("session started").count()
}

/// 30 players of one uncached on-demand title, all through the master,
/// started 100 ms apart: ten decode with `ffmpeg -f framemd5` and must equal
/// a direct pull frame for frame; ten decode with ffprobe and must count
/// every frame; ten are `gst-launch-1.0 rtspsrc` (which sends OPTIONS, then
/// DESCRIBE, and follows the 302) and must reach end of stream. (Thirty full
/// framemd5 runs would be as cheap to decode at 320×240 but hashing and
/// comparing ten proves the content; the rest prove that each player got the
/// whole title.) The origin sees exactly one PLAY: the master sent every
/// player to the node already fetching the title.
#[test]
fn thirty_players_via_the_master_share_one_origin_play() {
    let secs = 6;
    let origin = titles_origin(secs);
    let cluster = Cluster::start(&[cluster_mount(&origin)], 3, |c| c);
    let url = cluster.master.url(&cluster_title("thirty"));
    let reference = thread::spawn(move || direct_pull(secs));

    let results: Vec<Result<Option<Vec<String>>, String>> = thread::scope(|s| {
        let players: Vec<_> = (0..30)
            .map(|i| {
                thread::sleep(Duration::from_millis(100));
                let url = &url;
                s.spawn(move || play_one(i, url, secs))
            })
            .collect();
        players.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let reference = reference.join().unwrap();
    let mut failures = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(None) => {}
            Ok(Some(video)) if video == reference => {}
            Ok(Some(video)) => failures.push(format!(
                "player {i}: {} frames vs {} direct; first difference at {:?}",
                video.len(),
                reference.len(),
                video.iter().zip(&reference).position(|(a, b)| a != b)
            )),
            Err(e) => failures.push(format!("player {i}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        origin.requests("PLAY").len(),
        1,
        "origin requests: {:#?}",
        origin.requests("")
    );
    let served: Vec<usize> = cluster.nodes.iter().map(sessions_started).collect();
    assert_eq!(
        served.iter().sum::<usize>(),
        30,
        "sessions per node {served:?}"
    );
}

/// Player `i` of the thirty: framemd5 (its frame hashes), ffprobe or
/// gst-launch by `i % 3`.
fn play_one(i: usize, url: &str, secs: u32) -> Result<Option<Vec<String>>, String> {
    let frames = secs as u64 * FRAME_RATE as u64;
    match i % 3 {
        0 => Ok(Some(framemd5(url, Some("tcp"), "0:v", &[]))),
        1 => {
            let counted = ffprobe_count_frames(url, "tcp", None);
            if counted.video == frames {
                Ok(None)
            } else {
                Err(format!(
                    "ffprobe decoded {} of {frames} frames: {:?}",
                    counted.video, counted.output
                ))
            }
        }
        _ => {
            let run = gst_play(url, "tcp", None);
            if run.got_eos {
                Ok(None)
            } else {
                Err(format!("gst-launch never got EOS: {:?}", run.output))
            }
        }
    }
}

/// Three titles, each played once directly on a different node until its
/// store holds it complete: the master's content map shows each holder, and
/// players of each title sent via the master all land on its holder
/// (`Location` points there), decode the same frames as the play that
/// filled it, and the origin sees no new DESCRIBE or PLAY. Three titles on
/// three nodes, so that rendezvous hashing cannot pass the test by chance.
#[test]
fn titles_complete_on_one_node_send_their_players_there() {
    let secs = 4;
    let origin = titles_origin(secs);
    let cluster = Cluster::start(&[cluster_mount(&origin)], 3, |c| c);
    let names = ["a", "b", "c"];

    // Fill: one direct play per node, all at once.
    let filled: Vec<Vec<String>> = thread::scope(|s| {
        let plays: Vec<_> = cluster
            .nodes
            .iter()
            .zip(names)
            .map(|(node, name)| {
                s.spawn(move || {
                    let url = node.url(&cluster_title(name));
                    let video = framemd5(&url, Some("tcp"), "0:v", &[]);
                    node.wait_cached(&url, Duration::from_secs(20));
                    video
                })
            })
            .collect();
        plays.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (node, name) in cluster.nodes.iter().zip(names) {
        let held = poll_until(Duration::from_secs(10), || {
            cluster
                .master
                .holds_complete(&cluster_key(&origin, name), &node.id)
        });
        assert!(
            held,
            "the master never learnt that {} holds {name}: {:#}",
            node.id,
            cluster.master.admin_json("/api/v1/content")
        );
    }
    let before = origin.describes_and_plays();

    for ((node, name), filled) in cluster.nodes.iter().zip(names).zip(&filled) {
        for _ in 0..3 {
            let redirect = cluster.master.describe(&cluster_title(name), &[]);
            assert_eq!(redirect.status, 302, "{redirect:?}");
            assert_eq!(
                redirect.location.as_deref(),
                Some(format!("{}{}", node.rtsp_url(), cluster_title(name)).as_str()),
                "title {name} is held by {} only",
                node.id
            );
        }
        let url = cluster.master.url(&cluster_title(name));
        thread::scope(|s| {
            let ffmpeg = s.spawn(|| framemd5(&url, Some("tcp"), "0:v", &[]));
            let gst = s.spawn(|| gst_play(&url, "tcp", None));
            assert_same_video(name, &ffmpeg.join().unwrap(), filled);
            let gst = gst.join().unwrap();
            assert!(gst.got_eos, "gst-launch via the master: {:?}", gst.output);
        });
    }
    origin.assert_untouched_since(before);
    for node in &cluster.nodes {
        // Its own fill play, then the ffmpeg and gst players sent to it.
        assert_eq!(sessions_started(node), 3, "{}: {}", node.id, node.logs());
    }
}

/// The most sessions a node takes in the capacity test.
const CAP: usize = 25;

/// Six titles × ten players (`ffmpeg -c copy`, started 50 ms apart) and then
/// twenty raw players that hold their sessions, on three nodes of
/// `max_sessions = 25` each: 80 sessions for 75 places. Sampled every 100 ms
/// while they play, no node is ever above 25 — neither in its own
/// `/api/v1/sessions` nor in the master's `/api/v1/nodes`; every player
/// either plays or is refused with 503 (or 453), at least the five that do
/// not fit are; and the master never sends a player to a full node (no node
/// refuses a session for being at max_sessions).
#[test]
fn no_node_above_its_cap_and_the_overflow_is_refused() {
    let secs = 10;
    let origin = titles_origin(secs);
    let cluster = Cluster::start(&[cluster_mount(&origin)], 3, |c| {
        c.replace(
            "player_queue_packets = 2048\n",
            &format!("player_queue_packets = 2048\nmax_sessions = {CAP}\n"),
        )
    });
    for node in cluster.master.nodes() {
        assert_eq!(node["max_sessions"], CAP, "{node}");
    }

    let stop = AtomicBool::new(false);
    let (pulls, holders, samples) = thread::scope(|s| {
        let sampler = s.spawn(|| sample_sessions(&cluster, &stop));
        let pulls: Vec<_> = (0..60)
            .map(|i| {
                thread::sleep(Duration::from_millis(50));
                let url = cluster.master.url(&cluster_title(&format!("cap{}", i % 6)));
                s.spawn(move || ffmpeg_pull(&url, "tcp", secs))
            })
            .collect();
        // Once the sixty play, twenty more hold sessions (raw clients).
        poll_until(Duration::from_secs(20), || {
            cluster.nodes.iter().map(|n| n.sessions()).sum::<usize>() >= 55
        });
        let mut holders = Vec::new();
        for i in 0..20 {
            holders.push(hold_a_session(
                &cluster,
                &cluster_title(&format!("cap{}", i % 6)),
            ));
        }
        let pulls: Vec<Pull> = pulls.into_iter().map(|p| p.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        (pulls, holders, sampler.join().unwrap())
    });

    let mut refused = 0;
    for pull in &pulls {
        if pull.output.success() && pull.video_kb > 0 {
            continue;
        }
        refused += 1;
        let said = &pull.output.stderr;
        assert!(
            said.contains("503") || said.contains("453"),
            "a player neither played nor was refused with 503/453: {pull:?}"
        );
    }
    for holder in &holders {
        match holder {
            Held::Playing { .. } => {}
            Held::Refused(status) => {
                refused += 1;
                assert!(matches!(status, 503 | 453), "refused with {status}");
            }
        }
    }
    assert!(refused >= 5, "80 sessions for 75 places, {refused} refused");
    let (node_max, master_max) = samples;
    for node in &cluster.nodes {
        let seen = node_max.get(&node.id).copied().unwrap_or(0);
        assert!(seen <= CAP, "{} had {seen} sessions", node.id);
        assert!(seen > 0, "{} never had a session", node.id);
        let seen = master_max.get(&node.id).copied().unwrap_or(0);
        assert!(seen <= CAP, "the master saw {} at {seen} sessions", node.id);
        assert!(
            !node.logs().contains("the server is at max_sessions"),
            "the master sent a player to {} when it was full:\n{}",
            node.id,
            node.logs()
        );
    }
}

/// The most sessions each node had in any sample, by its own admin API and
/// by the master's, sampled every 100 ms until `stop`.
fn sample_sessions(
    cluster: &Cluster,
    stop: &AtomicBool,
) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let (mut by_node, mut by_master) = (HashMap::new(), HashMap::new());
    while !stop.load(Ordering::Relaxed) {
        for node in &cluster.nodes {
            let n = node.sessions();
            let max = by_node.entry(node.id.clone()).or_insert(0);
            *max = n.max(*max);
        }
        for node in cluster.master.nodes() {
            let id = node["id"].as_str().unwrap_or_default().to_owned();
            let n = node["sessions"].as_u64().unwrap_or(0) as usize;
            let max = by_master.entry(id).or_insert(0);
            *max = n.max(*max);
        }
        thread::sleep(Duration::from_millis(100));
    }
    (by_node, by_master)
}

/// A raw player that asks the master, follows its 302 and plays (TCP
/// interleaved), holding the session — or the status it was refused with.
enum Held {
    /// The connection holds the session.
    Playing {
        _conn: RtspConn,
    },
    Refused(u16),
}

fn hold_a_session(cluster: &Cluster, path: &str) -> Held {
    let redirect = cluster.master.describe(path, &[]);
    match redirect.status {
        302 => {}
        503 => {
            assert!(
                redirect.answer.header("Retry-After").is_some(),
                "{redirect:?}"
            );
            return Held::Refused(503);
        }
        other => return Held::Refused(other),
    }
    let location = redirect.location.expect("a 302 has a Location");
    let node = cluster.node_of(&location).expect("Location names a node");
    let mut conn = RtspConn::connect(node.port());
    let describe = conn.request("DESCRIBE", &location, &[]);
    assert_eq!(describe.status(), 200, "{describe:?}");
    let track = describe.sdp_track_urls(&location)[0].clone();
    let setup = conn.request(
        "SETUP",
        &track,
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
    );
    if setup.status() != 200 {
        return Held::Refused(setup.status());
    }
    let session = setup.session().expect("a session").to_owned();
    let play = conn.request("PLAY", &location, &[("Session", &session)]);
    assert_eq!(play.status(), 200, "{play:?}");
    Held::Playing { _conn: conn }
}

const USER: &str = "viewer";
const PASSWORD: &str = "s3cret-Pl4yer";

/// A mount with users, on the master and on every node: a DESCRIBE at the
/// master without credentials is answered 401 (with a challenge), with a
/// wrong password 401, with the right ones (Basic) 302 to a node whose URL
/// carries no credentials; the node demands them too (401 without); and
/// gst-launch's rtspsrc with `user-id`/`user-pw` authenticates at the master,
/// follows the redirect, authenticates at the node and plays to the end.
/// (ffmpeg drops the URL's credentials when it follows a redirect, so it is
/// not the player here.)
#[test]
fn a_mount_with_users_is_protected_at_the_master_and_at_the_node() {
    let secs = 4;
    let origin = titles_origin(secs);
    let users = hash_password_lines(None, USER, PASSWORD);
    let protected =
        cluster_mount(&origin).extra(&format!("auth_schemes = [\"basic\", \"digest\"]\n{users}"));
    let cluster = Cluster::start(&[protected], 3, |c| c);
    let path = cluster_title("auth");

    let anonymous = cluster.master.describe(&path, &[]);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(
        anonymous.answer.header("WWW-Authenticate").is_some(),
        "{anonymous:?}"
    );
    let wrong = format!("Basic {}", base64(format!("{USER}:guess").as_bytes()));
    let refused = cluster.master.describe(&path, &[("Authorization", &wrong)]);
    assert_eq!(refused.status, 401, "{refused:?}");
    let right = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let redirect = cluster.master.describe(&path, &[("Authorization", &right)]);
    assert_eq!(redirect.status, 302, "{redirect:?}");
    let location = redirect.location.clone().unwrap();
    assert!(!location.contains('@'), "credentials in {location}");
    assert!(
        !redirect
            .answer
            .headers
            .iter()
            .any(|(_, v)| v.contains(PASSWORD)),
        "{redirect:?}"
    );
    let node = cluster.node_of(&location).expect("a node");
    let mut conn = RtspConn::connect(node.port());
    assert_eq!(conn.request("DESCRIBE", &location, &[]).status(), 401);
    assert_eq!(origin.requests("PLAY").len(), 0);

    let url = cluster.master.url(&path);
    let gst = run_bounded(
        Command::new("gst-launch-1.0").args([
            "rtspsrc",
            &format!("location={url}"),
            "protocols=tcp",
            &format!("user-id={USER}"),
            &format!("user-pw={PASSWORD}"),
            "!",
            "decodebin",
            "!",
            "fakesink",
        ]),
        PLAYER_LIMIT,
    );
    assert!(gst.stdout.contains("Got EOS"), "{gst:?}");
    let started: String = cluster.nodes.iter().map(|n| n.logs()).collect();
    assert!(
        started.contains(&format!("user=\"{USER}\"")),
        "no node session of {USER}"
    );
    assert!(!cluster.master.logs().contains(PASSWORD));
}
