//! Issue 4 item 6: how on-demand titles are fetched into the store. Every
//! player is served from the store while one origin session per title (the
//! fill) records it. An interrupted fill leaves a `partial` entry that the
//! next play completes with a Range PLAY from where the held part ends,
//! spliced so the player gets every frame once; players of a title that is
//! still being fetched share that one fill, each from the start.
//!
//! Reference content comes from a direct pull of the same file from a second
//! origin, so that the proxy's origin counts only the proxy's requests.

mod support;

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const FRAME_RATE: usize = 25;
/// H.264 RTP clock.
const VIDEO_CLOCK: f64 = 90_000.0;

// ---------------------------------------------------------------------------
// Set-up

/// An origin serving one title at `/vod` and a proxy mounting it, with a
/// short linger so that an abandoned fill closes quickly.
struct Rig {
    origin: Origin,
    proxy: Proxy,
    /// The proxy's config file, for `streamcache cache --config FILE ls`.
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(secs: u32) -> Rig {
        let origin = Origin::start(OriginOpts::new().media(test_media(secs)));
        let dir = temp_dir();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let toml = Proxy::config(&cache, &[Mount::new("/vod", &origin.url("/vod"))])
            .replace("linger_secs = 2", "linger_secs = 1");
        assert!(toml.contains("linger_secs = 1"), "{toml}");
        let config = dir.path().join("streamcache.toml");
        std::fs::write(&config, &toml).unwrap();
        let proxy = Proxy::start(&toml);
        Rig {
            origin,
            proxy,
            config,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        self.proxy.url("/vod")
    }

    /// `streamcache cache ls` (read-only, beside the running daemon): the
    /// (state, held seconds) of each entry.
    fn cache_ls(&self) -> Vec<(String, f64)> {
        let out = run_streamcache(&["cache", "--config", self.config.to_str().unwrap(), "ls"]);
        assert!(out.success(), "cache ls: {out:?}");
        out.stdout
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // id, state, bytes, held, key
                let held = fields.get(3)?.strip_suffix('s')?.parse().ok()?;
                Some((fields.get(1)?.to_string(), held))
            })
            .collect()
    }

    /// Waits until `cache ls` shows exactly one entry, in `state`; returns
    /// the seconds it holds.
    fn wait_state(&self, state: &str, limit: Duration) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let entries = self.cache_ls();
            if let [(s, held)] = entries.as_slice() {
                if s == state {
                    return *held;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the entry never became {state}: cache ls shows {entries:?}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// SETUP and PLAY requests the origin has seen so far.
    fn origin_plays(&self) -> (usize, usize) {
        (
            self.origin.requests("SETUP").len(),
            self.origin.requests("PLAY").len(),
        )
    }
}

/// What a direct pull from the origin decodes to: video frame hashes and
/// the audio hash.
struct Reference {
    video: Vec<String>,
    audio: String,
}

/// Pulls the `secs` title directly from an origin of its own (video and
/// audio side by side, in real time).
fn direct_pull(secs: u32) -> Reference {
    let origin = Origin::start(OriginOpts::new().media(test_media(secs)));
    let url = origin.url("/vod");
    let (video, audio) = thread::scope(|s| {
        let video = s.spawn(|| framemd5(&url, Some("tcp"), "0:v", &[]));
        let audio = s.spawn(|| audio_md5(&url, Some("tcp"), &[]));
        (video.join().unwrap(), audio.join().unwrap())
    });
    assert_eq!(video.len(), secs as usize * FRAME_RATE, "direct pull");
    Reference { video, audio }
}

/// Asserts that a play through the proxy decoded to the direct pull's frames.
fn assert_same_video(name: &str, got: &[String], reference: &Reference) {
    assert!(
        got == reference.video,
        "{name}: {} frames vs {} direct; first difference at frame {:?}",
        got.len(),
        reference.video.len(),
        got.iter().zip(&reference.video).position(|(a, b)| a != b)
    );
}

/// The start (s) of a `Range: npt=START-[END]` header.
fn range_start(range: &str) -> f64 {
    range
        .strip_prefix("npt=")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("Range {range:?}"))
}

/// Whether an RTCP compound packet holds a BYE.
fn is_bye(rtcp: &[u8]) -> bool {
    let mut at = 0;
    while at + 4 <= rtcp.len() {
        if rtcp[at + 1] == 203 {
            return true;
        }
        at += 4 * (usize::from(u16::from_be_bytes([rtcp[at + 2], rtcp[at + 3]])) + 1);
    }
    false
}

/// A scripted player of `url` (RTP/AVP/TCP interleaved, track i on channels
/// 2i/2i+1). Plays from the start and reads until video media time reaches
/// `until_secs` (counted from the first video packet) or both tracks' RTCP
/// BYE, whichever is first, then sends TEARDOWN. `at_secs` (if given) is
/// told once video media time reaches its first value. Returns the last
/// video media time reached and whether the stream ended (BYEs).
fn scripted_play(
    port: u16,
    url: &str,
    until_secs: f64,
    mut at_secs: Option<(f64, mpsc::Sender<()>)>,
) -> (f64, bool) {
    let mut conn = RtspConn::connect(port);
    let (session, _) = conn.play(url, None);
    let deadline = Instant::now() + PLAYER_LIMIT;
    let (mut first_ts, mut reached, mut byes) = (None, 0.0, [false; 2]);
    while reached < until_secs && !byes.iter().all(|b| *b) {
        assert!(Instant::now() < deadline, "the scripted play never ended");
        let (channel, data) = conn
            .read_interleaved()
            .unwrap_or_else(|e| panic!("scripted player at {reached:.1} s: {e}"));
        if channel % 2 == 1 {
            byes[usize::from(channel / 2).min(1)] |= is_bye(&data);
            continue;
        }
        let Some(rtp) = Rtp::parse(&data).filter(|_| channel == 0) else {
            continue;
        };
        let first = *first_ts.get_or_insert(rtp.timestamp);
        reached = f64::from(rtp.timestamp.wrapping_sub(first) as i32) / VIDEO_CLOCK;
        if at_secs.as_ref().is_some_and(|(at, _)| reached >= *at) {
            let _ = at_secs.take().unwrap().1.send(());
        }
    }
    let ended = byes.iter().all(|b| *b);
    // After BYE the proxy may already have closed the connection.
    if !ended {
        let resp = conn.request("TEARDOWN", url, &[("Session", &session)]);
        assert_eq!(resp.status(), 200, "TEARDOWN: {resp:?}");
    }
    (reached, ended)
}

// ---------------------------------------------------------------------------
// The tests

/// Partial fill (issue 4 proof item): a first player that leaves at ~8 s of
/// a 20 s title leaves a `partial` entry once the fill has lingered out.
/// A full play then makes the origin see one PLAY with a Range starting
/// near where the held part ends (well after 0, before the end), decodes
/// frame for frame to a direct pull (the held part and the fetched rest
/// spliced, every frame once), and leaves the entry `complete`: a further
/// play makes no SETUP/PLAY at the origin and its audio equals the direct
/// pull's.
#[test]
fn partial_fill_is_completed_with_a_range_play_frame_identical() {
    let secs = 20;
    let rig = Rig::start(secs);
    let url = rig.url();
    let reference = thread::spawn(move || direct_pull(secs));

    // The first player stops at 8 s of media.
    let (reached, ended) = scripted_play(rig.proxy.port(), &url, 8.0, None);
    assert!(
        (8.0..9.0).contains(&reached) && !ended,
        "{reached} s, {ended}"
    );
    assert!(
        rig.proxy.wait_log_any(
            &["origin ended the stream", "no players left"],
            Duration::from_secs(20)
        ),
        "the fill never closed after the player left"
    );
    let held = rig.wait_state("partial", Duration::from_secs(10));
    assert_eq!(
        rig.origin_plays(),
        (2, 1),
        "the first play: one origin session"
    );
    let first_plays = rig.origin.requests("PLAY").len();
    eprintln!("partial entry holds {held:.1} s");

    // The full play: the held part from the store, the rest fetched.
    let video = framemd5(&url, Some("tcp"), "0:v", &[]);
    let plays = rig.origin.requests("PLAY");
    let rest: Vec<_> = plays[first_plays..].iter().collect();
    assert_eq!(rest.len(), 1, "the full play's origin PLAYs: {rest:?}");
    let range = rest[0].range.as_deref().expect("the fill PLAY has a Range");
    let start = range_start(range);
    assert!(
        (6.0..12.0).contains(&start) && start < f64::from(secs),
        "the fill resumed at Range {range:?}, not near 8 s"
    );
    eprintln!("the fill of the rest: PLAY Range {range}");
    assert!(
        rig.proxy
            .logs()
            .contains("partial title: filling the rest from the origin"),
        "no partial-fill log line"
    );
    let reference = reference.join().unwrap();
    assert_same_video("the partial-fill play", &video, &reference);
    rig.wait_state("complete", Duration::from_secs(20));

    // Now wholly cached: no origin session, and the audio is intact too.
    let before = rig.origin_plays();
    let audio = audio_md5(&url, Some("tcp"), &[]);
    assert_eq!(
        rig.origin_plays(),
        before,
        "a complete entry reached the origin"
    );
    assert_eq!(audio, reference.audio, "the cached play's audio");
}

/// Three players start the same uncached title within a second: the origin
/// gets one session (one SETUP per track, one PLAY), and every player
/// decodes the whole title from the start, frame for frame as a direct pull.
#[test]
fn concurrent_players_share_one_fetch() {
    let secs = 8;
    let rig = Rig::start(secs);
    let url = rig.url();
    let reference = thread::spawn(move || direct_pull(secs));
    let videos: Vec<Vec<String>> = thread::scope(|s| {
        let players: Vec<_> = (0..3)
            .map(|_| s.spawn(|| framemd5(&url, Some("tcp"), "0:v", &[])))
            .collect();
        players.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert_eq!(
        rig.origin_plays(),
        (2, 1),
        "three players, origin SETUP/PLAY counts: {:?}",
        rig.origin.requests("")
    );
    assert_eq!(rig.origin.sessions(), 1);
    let reference = reference.join().unwrap();
    for (i, video) in videos.iter().enumerate() {
        assert_same_video(&format!("player {i}"), video, &reference);
    }
}

/// A late player: B starts a 12 s title when player A is 4 s into it (and
/// still fetching it). The origin still sees one PLAY, and B decodes the
/// whole title from the beginning, frame for frame as a direct pull — not
/// from where the fetch had got to.
#[test]
fn late_player_of_a_title_being_fetched_starts_at_the_beginning() {
    let secs = 12;
    let rig = Rig::start(secs);
    let url = rig.url();
    let port = rig.proxy.port();
    let reference = thread::spawn(move || direct_pull(secs));
    let (at_4s, reached_4s) = mpsc::channel();
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| scripted_play(port, &url, f64::INFINITY, Some((4.0, at_4s))));
        reached_4s
            .recv_timeout(Duration::from_secs(30))
            .expect("player A never reached 4 s");
        let (setups, plays) = rig.origin_plays();
        assert!(
            plays == 1 && setups == 2,
            "A's fetch: {setups} SETUPs, {plays} PLAYs"
        );
        let b = framemd5(&url, Some("tcp"), "0:v", &[]);
        (a.join().unwrap(), b)
    });
    let (a_reached, a_ended) = a;
    assert!(
        a_ended && a_reached > f64::from(secs) - 1.0,
        "player A stopped at {a_reached} s (ended: {a_ended})"
    );
    assert_eq!(
        rig.origin_plays(),
        (2, 1),
        "A and B: origin requests {:?}",
        rig.origin.requests("")
    );
    let reference = reference.join().unwrap();
    assert_same_video("late player B", &b, &reference);
}
