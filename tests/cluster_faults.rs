//! Issue 12 (Cluster I), faults, with real processes on loopback (one
//! master, three nodes, the GStreamer origin, real players):
//!
//! - `kill -9` of a node: down within the report period × (polls + 1) and
//!   some slack; new players go elsewhere; restarted with the same id,
//!   cache and ports it is up again and its cached title is sent to it.
//! - `kill -9` of the master: a player in progress plays to the end; a
//!   restarted master (same ports) rebuilds the content map from the nodes'
//!   reports and redirects to the holder.
//! - A node with the wrong token, garbage on the control port, a gRPC call
//!   with a wrong token or a bad Hello: refused with a clear log line, the
//!   other nodes stay up and redirects keep working.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use streamcache::cluster::protocol::pb;
use support::*;

const FRAME_RATE: u64 = 25;

/// An origin serving the `secs` title at `/vod/NAME` for each of the names
/// the tests here use: each a title (a cache key) of its own.
fn titles_origin(secs: u32) -> Origin {
    Origin::start(
        OriginOpts::new()
            .media(test_media(secs))
            .titles(&["k", "other", "m", "direct", "after"]),
    )
}

/// The node a DESCRIBE of `path` at the master is sent to (its id).
fn redirected_to(cluster: &Cluster, path: &str) -> String {
    let redirect = cluster.master.describe(path, &[]);
    assert_eq!(redirect.status, 302, "{redirect:?}");
    let location = redirect.location.unwrap();
    assert!(location.ends_with(path), "{location} for {path}");
    cluster
        .node_of(&location)
        .unwrap_or_else(|| panic!("{location} is no running node"))
        .id
        .clone()
}

/// The longest the master may take to call a killed node down: the nodes
/// report every period, a silent one is polled once a period, and it is down
/// after `DOWN_AFTER_POLLS` unanswered polls; plus slack for a loaded machine.
fn down_window() -> Duration {
    REPORT_PERIOD * (DOWN_AFTER_POLLS + 1) + Duration::from_secs(3)
}

/// A title played via the master fills on node X. `kill -9` of X: the
/// master calls it down within the window; new players of that title and
/// of others are sent elsewhere and play. X restarted (same id, cache
/// directory, ports) is up again, the master learns from its inventory
/// that it holds the title complete, sends the title's players to it
/// again, and they play from its store (no new origin PLAY).
#[test]
fn a_killed_node_is_down_in_time_and_used_again_after_a_restart() {
    let secs = 4;
    let origin = titles_origin(secs);
    let mut cluster = Cluster::start(&[cluster_mount(&origin)], 3, |c| c);
    let path = cluster_title("k");
    let url = cluster.master.url(&path);

    let counted = ffprobe_count_frames(&url, "tcp", None);
    // ffprobe's probe may end before the title does: play it whole.
    assert_eq!(counted.video, u64::from(secs) * FRAME_RATE, "{counted:?}");
    let x = redirected_to(&cluster, &path);
    let xi = cluster.nodes.iter().position(|n| n.id == x).unwrap();
    cluster.nodes[xi].wait_cached(&cluster.nodes[xi].url(&path), Duration::from_secs(20));

    cluster.nodes[xi].kill9();
    let killed = Instant::now();
    cluster.master.wait_health(&x, "down", down_window());
    eprintln!("{x} was down {:?} after kill -9", killed.elapsed());
    let y = redirected_to(&cluster, &path);
    assert_ne!(y, x, "a player was sent to the dead node");
    for _ in 0..4 {
        assert_ne!(
            redirected_to(&cluster, &path),
            x,
            "a player was sent to the dead node"
        );
    }
    let elsewhere = ffprobe_count_frames(&cluster.master.url(&cluster_title("other")), "tcp", None);
    assert_eq!(
        elsewhere.video,
        u64::from(secs) * FRAME_RATE,
        "{elsewhere:?}"
    );
    let plays = origin.requests("PLAY").len();

    cluster.nodes[xi].restart();
    cluster
        .master
        .wait_health(&x, "up", Duration::from_secs(15));
    let known = poll_until(Duration::from_secs(5), || {
        cluster
            .master
            .holds_complete(&cluster_key(&origin, "k"), &x)
    });
    assert!(
        known,
        "the restarted {x}'s title is not in the content map: {:#}",
        cluster.master.admin_json("/api/v1/content")
    );
    // The only complete holder comes before the node that was asked to
    // prepare it while X was down (its origin session opened, nothing
    // played, nothing held).
    assert_eq!(redirected_to(&cluster, &path), x, "X is used again");
    let again = gst_play(&url, "tcp", None);
    assert!(again.got_eos, "{again:?}");
    assert_eq!(
        origin.requests("PLAY").len(),
        plays,
        "the title came from the origin again: {:#?}",
        origin.requests("")
    );
}

/// A player is playing a 10 s title through a node when the master is
/// killed: it plays to the end, every frame. The nodes keep serving: a
/// player straight to a node plays too. The master restarted on the same
/// ports has every node up again, shows the title (which the node now holds
/// complete) in `/api/v1/content` soon after, redirects its players to that
/// node, and they play without a new origin PLAY.
#[test]
fn the_nodes_keep_serving_without_the_master_which_rebuilds_its_map() {
    let secs = 10;
    let origin = titles_origin(secs);
    let mut cluster = Cluster::start(&[cluster_mount(&origin)], 3, |c| c);
    let path = cluster_title("m");
    let url = cluster.master.url(&path);

    let (frames, holder) = thread::scope(|s| {
        let player = s.spawn(|| ffprobe_count_frames(&url, "tcp", None));
        let holder = wait_for(Duration::from_secs(20), || {
            cluster
                .nodes
                .iter()
                .find(|n| n.sessions() > 0)
                .map(|n| n.id.clone())
        })
        .expect("the player never reached a node");
        cluster.master.kill9();
        // Without a master, a node still serves a player who comes to it.
        let direct =
            ffprobe_count_frames(&cluster.nodes[0].url(&cluster_title("direct")), "tcp", None);
        assert_eq!(direct.video, u64::from(secs) * FRAME_RATE, "{direct:?}");
        (player.join().unwrap(), holder)
    });
    assert_eq!(frames.video, u64::from(secs) * FRAME_RATE, "{frames:?}");

    let node = cluster.node(&holder);
    node.wait_cached(&node.url(&path), Duration::from_secs(20));
    let plays = origin.requests("PLAY").len();

    cluster.master.restart();
    cluster.master.wait_nodes_up(3, Duration::from_secs(20));
    let rebuilt = poll_until(REPORT_PERIOD * 3 + Duration::from_secs(2), || {
        cluster
            .master
            .holds_complete(&cluster_key(&origin, "m"), &holder)
    });
    assert!(
        rebuilt,
        "the restarted master does not know that {holder} holds the title: {:#}",
        cluster.master.admin_json("/api/v1/content")
    );
    assert_eq!(redirected_to(&cluster, &path), holder);
    let again = gst_play(&url, "tcp", None);
    assert!(again.got_eos, "{again:?}");
    assert_eq!(
        origin.requests("PLAY").len(),
        plays,
        "{:#?}",
        origin.requests("")
    );
}

/// The control port takes bad peers without harm: a node with the wrong
/// token (refused, logged on the master, never listed up, its own cluster
/// status not connected); raw garbage, an HTTP/1 request and an HTTP/2
/// preface followed by a malformed frame on plain TCP; a gRPC call with a
/// wrong token (curl, HTTP/2 prior knowledge: grpc-status 16); a gRPC
/// stream with the right token whose Hello has another protocol version, or
/// that starts with something else than Hello (refused with a reason). The
/// three good nodes stay up and a player sent via the master plays.
#[test]
fn bad_peers_on_the_control_port_are_refused_and_harm_nothing() {
    let secs = 4;
    let origin = titles_origin(secs);
    let cluster = Cluster::start(&[cluster_mount(&origin)], 3, |c| c);
    let control = cluster.master.control_port();

    // A node with the wrong token.
    let cache = temp_dir();
    let bad_node = Proxy::start(
        &(Proxy::config(cache.path(), &[cluster_mount(&origin)])
            + &cluster_section(&cluster.master.control_url(), "intruder")
                .replace(CLUSTER_TOKEN, "not-the-cluster-token-at-all")),
    );
    let logged = cluster.master.wait_log("intruder", Duration::from_secs(10))
        || poll_until(Duration::from_secs(5), || {
            cluster
                .master
                .logs()
                .lines()
                .any(|l| l.contains("token") && l.contains("refus"))
        });
    assert!(
        logged,
        "no log line of the refused node:\n{}",
        cluster.master.logs()
    );
    assert!(!cluster
        .master
        .logs()
        .contains("not-the-cluster-token-at-all"));
    assert_ne!(cluster.master.health("intruder").as_deref(), Some("up"));
    let status = bad_node.admin_get("/api/v1/cluster");
    assert_eq!(status.status, 200, "{status}");
    assert_eq!(status.json()["connected"], false, "{status}");
    assert_eq!(status.json()["node_id"], "intruder", "{status}");

    // Garbage on plain TCP: each connection is closed, nothing else happens.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut bad_frame = preface.to_vec();
    // A SETTINGS frame of length 5 (not a multiple of 6) on stream 7.
    bad_frame.extend_from_slice(&[0, 0, 5, 4, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5]);
    // (Each longer than HTTP/2's 24-byte preface, so the master can tell.)
    for garbage in [
        &[
            0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 255, 254, 253, 252, 0, 0, 0, 0,
        ][..],
        b"GET /streamcache.cluster.v1.Control/Attach HTTP/1.1\r\nHost: x\r\n\r\n",
        &bad_frame,
    ] {
        let garbage = [garbage, &[0x55; 32][..]].concat();
        let mut conn = TcpStream::connect(("127.0.0.1", control)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(&garbage).unwrap();
        let mut rest = Vec::new();
        // The master closes the connection (EOF, or a reset as it closes
        // with our bytes unread), at once rather than at our read timeout.
        let closed = match conn.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        assert!(closed, "the control port kept a garbage connection open");
    }

    // gRPC with a wrong token: UNAUTHENTICATED (16), via curl.
    let call = run_bounded(
        Command::new("curl").args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
            "authorization: Bearer wrong-token-wrong-token",
            "--data-binary",
            "",
            &format!("http://127.0.0.1:{control}/streamcache.cluster.v1.Control/Attach"),
        ]),
        Duration::from_secs(20),
    );
    assert!(
        call.stdout.to_ascii_lowercase().contains("grpc-status: 16"),
        "{call:?}"
    );

    // gRPC with the right token and a bad first message.
    let refusals = refused_hellos(control);
    for reason in &refusals {
        assert!(!reason.is_empty(), "{refusals:?}");
    }
    assert!(refusals[0].contains("version"), "{refusals:?}");

    cluster.master.wait_nodes_up(3, Duration::from_secs(2));
    for node in &cluster.nodes {
        assert_eq!(cluster.master.health(&node.id).as_deref(), Some("up"));
    }
    let played = ffprobe_count_frames(&cluster.master.url(&cluster_title("after")), "tcp", None);
    assert_eq!(played.video, u64::from(secs) * FRAME_RATE, "{played:?}");
}

/// Two gRPC `Attach` streams with the right token: one whose Hello speaks
/// protocol version 99, one that opens with a LoadReport. Each must be
/// answered with `Refused` (its reason returned) or end with an error status
/// (its message returned).
fn refused_hellos(control: u16) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hello = pb::Hello {
        protocol_version: 99,
        node_id: "future".into(),
        rtsp_url: "rtsp://127.0.0.1:1".into(),
        max_sessions: 10,
        max_egress_bps: 1_000_000,
        ..Default::default()
    };
    let not_hello = pb::envelope::Body::Load(pb::LoadReport::default());
    [pb::envelope::Body::Hello(hello), not_hello]
        .into_iter()
        .map(|first| runtime.block_on(attach_once(control, first)))
        .collect()
}

async fn attach_once(control: u16, first: pb::envelope::Body) -> String {
    use futures_util::StreamExt as _;
    let mut client =
        pb::control_client::ControlClient::connect(format!("http://127.0.0.1:{control}"))
            .await
            .expect("connect to the control port");
    let batch = pb::Batch {
        messages: vec![pb::Envelope {
            request_id: 0,
            body: Some(first),
        }],
    };
    // The stream stays open after the first batch: the master must end it.
    let outbound = futures_util::stream::iter([batch]).chain(futures_util::stream::pending());
    let mut request = tonic::Request::new(outbound);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {CLUSTER_TOKEN}").parse().unwrap(),
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut inbound = match client.attach(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return format!("status: {}", status.message()),
        };
        loop {
            match inbound.message().await {
                Ok(Some(batch)) => {
                    for envelope in batch.messages {
                        if let Some(pb::envelope::Body::Refused(refused)) = envelope.body {
                            return refused.reason;
                        }
                    }
                }
                Ok(None) => return String::new(),
                Err(status) => return format!("status: {}", status.message()),
            }
        }
    });
    answer
        .await
        .expect("the master neither refused nor closed a bad stream")
}
