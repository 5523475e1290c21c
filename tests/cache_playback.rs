//! Issue 4: on-demand titles played from the cache. Each test fills the
//! store with one full play through the proxy (the origin ends the stream,
//! the entry becomes complete), then checks what a later player sees: no
//! origin contact, the same decoded frames, seek, pause/resume with
//! continuous RTP numbering, pacing on the recorded schedule, player
//! Cache-Control, and a Range with an end.

mod support;

// The scripted player, in tests/cache_playback/player.rs.
#[path = "cache_playback/player.rs"]
mod player;

use std::thread;
use std::time::{Duration, Instant};

use player::*;
use support::*;

const FRAME_RATE: usize = 25;
const VIDEO: usize = 0;
const AUDIO: usize = 1;

// ---------------------------------------------------------------------------
// Set-up: an origin serving one title at /vod, a proxy mounting it.

struct Rig {
    origin: Origin,
    proxy: Proxy,
    _cache: tempfile::TempDir,
}

impl Rig {
    fn start(secs: u32) -> Rig {
        let origin = Origin::start(OriginOpts::new().media(test_media(secs)));
        let cache = temp_dir();
        let proxy = Proxy::start(&Proxy::config(
            cache.path(),
            &[Mount::new("/vod", &origin.url("/vod"))],
        ));
        Rig {
            origin,
            proxy,
            _cache: cache,
        }
    }

    fn url(&self) -> String {
        self.proxy.url("/vod")
    }

    fn player(&self) -> Player {
        Player::connect(&self.proxy, &self.url())
    }

    /// Plays the whole title once through the proxy (relayed from the origin
    /// and recorded), then waits until the store holds it completely.
    fn fill(&self) {
        let mut player = self.player();
        player.describe(&[]);
        player.setup_all(&[]);
        let url = self.url();
        let resp = player.send("PLAY", &url, &[]);
        assert_eq!(resp.status(), 200, "relayed PLAY: {resp:?}");
        let ended = player.read_until_bye(PLAYER_LIMIT);
        assert!(ended, "the relayed first play did not end");
        drop(player);
        self.wait_cached();
    }

    /// Waits until the proxy answers an `only-if-cached` DESCRIBE (the store
    /// holds the whole title).
    fn wait_cached(&self) {
        assert!(
            self.proxy
                .wait_log("origin ended the stream", Duration::from_secs(30)),
            "the origin never ended the first play"
        );
        // The entry is sealed (complete) right after the origin session is
        // torn down; no log line marks it, so ask the proxy.
        self.proxy.wait_cached(&self.url(), Duration::from_secs(10));
    }

    /// SETUP + PLAY requests the origin has seen so far.
    fn origin_plays(&self) -> (usize, usize) {
        (
            self.origin.requests("SETUP").len(),
            self.origin.requests("PLAY").len(),
        )
    }
}

// ---------------------------------------------------------------------------
// The tests

/// A hit: after one full play, a second play of the same URL gets no SETUP
/// or PLAY at the origin, and decodes — video frame by frame, and audio — to
/// exactly what a direct pull from the origin decodes to, over TCP and UDP.
#[test]
fn second_play_is_served_from_the_cache_frame_identical() {
    let rig = Rig::start(6);
    let (direct_url, url) = (rig.origin.url("/vod"), rig.url());
    // The first play through the proxy (relayed and recorded) and the direct
    // pulls run side by side: each takes the title's length.
    let (relayed, direct_video, direct_audio) = thread::scope(|s| {
        let relayed = s.spawn(|| framemd5(&url, Some("tcp"), "0:v", &[]));
        let video = s.spawn(|| framemd5(&direct_url, Some("tcp"), "0:v", &[]));
        let audio = s.spawn(|| audio_md5(&direct_url, Some("tcp"), &[]));
        (
            relayed.join().unwrap(),
            video.join().unwrap(),
            audio.join().unwrap(),
        )
    });
    assert_eq!(direct_video.len(), 6 * FRAME_RATE);
    assert!(relayed == direct_video, "the relayed first play differs");
    rig.wait_cached();
    let before = rig.origin_plays();
    let describes = rig.origin.requests("DESCRIBE").len();

    let (tcp_video, tcp_audio, udp_video, udp_audio) = thread::scope(|s| {
        let tcp_video = s.spawn(|| framemd5(&url, Some("tcp"), "0:v", &[]));
        let tcp_audio = s.spawn(|| audio_md5(&url, Some("tcp"), &[]));
        let udp_video = s.spawn(|| framemd5(&url, Some("udp"), "0:v", &[]));
        let udp_audio = s.spawn(|| audio_md5(&url, Some("udp"), &[]));
        (
            tcp_video.join().unwrap(),
            tcp_audio.join().unwrap(),
            udp_video.join().unwrap(),
            udp_audio.join().unwrap(),
        )
    });
    assert_eq!(
        rig.origin_plays(),
        before,
        "cached plays reached the origin (SETUP, PLAY counts)"
    );
    assert_eq!(
        rig.proxy.logs().matches("playing from the cache").count(),
        4,
        "every second play is a cache hit"
    );
    for (name, video) in [("tcp", &tcp_video), ("udp", &udp_video)] {
        assert!(
            *video == direct_video,
            "cached {name} play: {} frames vs {} direct; first difference at {:?}",
            video.len(),
            direct_video.len(),
            video.iter().zip(&direct_video).position(|(a, b)| a != b)
        );
    }
    assert_eq!(tcp_audio, direct_audio, "cached tcp play: audio");
    assert_eq!(udp_audio, direct_audio, "cached udp play: audio");
    eprintln!(
        "origin DESCRIBEs during the cached plays: {}",
        rig.origin.requests("DESCRIBE").len() - describes
    );
}

/// Seek in a cached title: `ffmpeg -ss 10 -noaccurate_seek` through the
/// proxy starts at a keyframe at or before 10 s (not earlier than the one
/// before it), its frames are the file's own from there to the end, and
/// they are a tail of what the same seek directly at the origin decodes to.
#[test]
fn seek_in_a_cached_title_starts_at_the_keyframe() {
    let secs = 20;
    let media = test_media(secs);
    let rig = Rig::start(secs);
    let seek = ["-ss", "10", "-noaccurate_seek"];
    let direct_url = rig.origin.url("/vod");
    let (direct, file) = thread::scope(|s| {
        let direct = s.spawn(|| framemd5(&direct_url, Some("tcp"), "0:v", &seek));
        let file = s.spawn(|| framemd5(media.to_str().unwrap(), None, "0:v", &[]));
        rig.fill();
        (direct.join().unwrap(), file.join().unwrap())
    });
    let before = rig.origin_plays();

    let cached = framemd5(&rig.url(), Some("tcp"), "0:v", &seek);
    assert_eq!(rig.origin_plays(), before, "the seek reached the origin");
    assert!(rig.proxy.logs().contains("playing from the cache"));

    assert_eq!(file.len(), secs as usize * FRAME_RATE);
    assert!(
        is_suffix(&cached, &file),
        "the cached seek's {} frames are not the file's last ones",
        cached.len()
    );
    let first = file.len() - cached.len();
    assert!(
        first.is_multiple_of(FRAME_RATE) && (9 * FRAME_RATE..=10 * FRAME_RATE).contains(&first),
        "the cached seek starts at frame {first}, not at the keyframe at or before 10 s"
    );
    assert!(
        is_suffix(&cached, &direct),
        "the cached seek ({} frames) is not a tail of the direct seek ({} frames)",
        cached.len(),
        direct.len()
    );
}

/// PAUSE and PLAY from the cache with a scripted player: nothing arrives
/// while paused; on resume every track's sequence numbers go on by exactly
/// one, the SSRC stays, the media resumes where it stopped, and `RTP-Info`
/// names the next packet's seq and the rtptime of the resumed npt. A seek
/// (`Range: npt=5-`) afterwards keeps the numbering continuous and starts at
/// the keyframe at or before 5 s, parameter sets first.
#[test]
fn pause_resume_and_seek_keep_rtp_numbering_continuous() {
    let rig = Rig::start(8);
    rig.fill();
    let plays = rig.origin_plays();
    let mut player = rig.player();
    assert_eq!(player.describe(&[]).status(), 200);
    player.setup_all(&[]);

    // First PLAY: RTP-Info matches the very first packets.
    let first = player.play(None);
    assert!(first.start.abs() < 0.001, "{first:?}");
    let played_at = Instant::now();
    let mut before = player.read_until(played_at + Duration::from_secs(2));
    for track in [VIDEO, AUDIO] {
        let rtp = first_rtp(&before, track);
        assert_eq!(rtp.sequence, first.tracks[&track].seq, "track {track}");
        let lead = rtp.timestamp.wrapping_sub(first.tracks[&track].rtptime) as i32;
        assert!(
            (0..player.clock_rates[track] as i32 / 2).contains(&lead),
            "track {track}: first packet {lead} ticks after RTP-Info's rtptime"
        );
    }

    // PAUSE: packets sent before the answer are fine, none after it.
    let resp = player.send("PAUSE", &rig.url(), &[]);
    assert_eq!(resp.status(), 200, "{resp:?}");
    before.extend(player.queued.drain(..));
    let silent = player.next(Duration::from_secs(1));
    assert!(silent.is_none(), "a packet while paused: {silent:?}");
    let paused = last_rtp(&before);
    let paused_npt = player.media_time(&first, VIDEO, paused[&VIDEO].1);
    assert!(
        (1.5..3.0).contains(&paused_npt),
        "paused at {paused_npt} s after ~2 s of play"
    );

    // Resume.
    let resumed = player.play(None);
    assert!(
        (resumed.start - paused_npt).abs() < 0.3,
        "resumed at {} s, paused at {paused_npt} s",
        resumed.start
    );
    let after = read_first_of_each(&mut player);
    for track in [VIDEO, AUDIO] {
        let (last_seq, last_ts, ssrc) = paused[&track];
        let next = first_rtp(&after, track);
        let info = resumed.tracks[&track];
        let rate = player.clock_rates[track];
        assert_eq!(next.sequence, last_seq.wrapping_add(1), "track {track}");
        assert_eq!(info.seq, next.sequence, "track {track}: RTP-Info seq");
        assert_eq!(next.ssrc, ssrc, "track {track}: SSRC changed");
        // The media goes on from where it stopped: no repeat, no jump.
        let step = next.timestamp.wrapping_sub(last_ts) as i32;
        assert!(
            (0..rate as i32 / 5).contains(&step),
            "track {track}: resumed {step} ticks after the last packet"
        );
        // rtptime is the RTP time of the Range's npt on the same clock.
        let expect = first.tracks[&track]
            .rtptime
            .wrapping_add(((resumed.start - first.start) * f64::from(rate)).round() as u32);
        let off = info.rtptime.wrapping_sub(expect) as i32;
        assert!(
            off.unsigned_abs() <= rate / 1000 + 1,
            "track {track}: rtptime {} is {off} ticks off npt {}",
            info.rtptime,
            resumed.start
        );
        // The next packet of one track may lie a little before the resumed
        // npt (the position is where the next record of any track is).
        let lead = next.timestamp.wrapping_sub(info.rtptime) as i32;
        assert!(
            lead.unsigned_abs() < rate / 10,
            "track {track}: first packet {lead} ticks from rtptime"
        );
    }

    // Seek while playing: numbering still continuous.
    let mut until_seek = after;
    let seeked = player.play(Some("npt=5-"));
    until_seek.extend(player.queued.drain(..));
    assert!(
        (4.0..=5.0).contains(&seeked.start),
        "Range answer {:?} does not start at the keyframe at or before 5 s",
        seeked.range
    );
    let last = last_rtp(&until_seek);
    let from_seek = read_first_of_each(&mut player);
    let video = first_rtp(&from_seek, VIDEO);
    assert!(
        video.starts_h264_keyframe(),
        "the seek does not start with parameter sets / IDR: NAL {:?}",
        video.h264_nal_type()
    );
    assert_eq!(video.timestamp, seeked.tracks[&VIDEO].rtptime);
    for track in [VIDEO, AUDIO] {
        let next = first_rtp(&from_seek, track);
        assert_eq!(
            next.sequence,
            last[&track].0.wrapping_add(1),
            "track {track} after the seek"
        );
        assert_eq!(seeked.tracks[&track].seq, next.sequence, "track {track}");
        assert_eq!(next.ssrc, paused[&track].2, "track {track}: SSRC changed");
        let npt = player.media_time(&first, track, next.timestamp);
        assert!(
            (seeked.start - 0.001..seeked.start + 0.5).contains(&npt),
            "track {track}: first packet after the seek at {npt} s, Range says {}",
            seeked.start
        );
    }
    player.send("TEARDOWN", &rig.url(), &[]);
    assert_eq!(rig.origin_plays(), plays, "the player reached the origin");
}

/// Pacing: a cached 20 s title arrives at the player over 20 s ± 5 %, from
/// the PLAY answer to its last RTP packet (then comes the RTCP BYE), and
/// every video packet arrives within
/// 5 % of the title's length of its media time (paced all along, not in
/// bursts).
#[test]
fn cached_title_is_paced_on_its_recorded_schedule() {
    let secs = 20.0;
    let rig = Rig::start(20);
    rig.fill();
    let mut player = rig.player();
    player.describe(&[]);
    player.setup_all(&[]);
    let played = player.play(None);
    let t0 = Instant::now();
    let (packets, ended) = player.read_packets_until_bye(Duration::from_secs(40));
    assert!(ended, "no BYE after {:?}", t0.elapsed());
    let last = packets
        .iter()
        .rev()
        .find(|p| p.rtp().is_some())
        .expect("RTP");
    let took = last.at.duration_since(t0).as_secs_f64();
    assert!(
        (secs * 0.95..=secs * 1.05).contains(&took),
        "the {secs} s title took {took:.2} s to arrive"
    );
    let mut worst: f64 = 0.0;
    for p in &packets {
        if let Some(rtp) = p.rtp().filter(|_| p.track == VIDEO) {
            let due = player.media_time(&played, VIDEO, rtp.timestamp);
            let arrived = p.at.duration_since(t0).as_secs_f64();
            worst = worst.max((arrived - due).abs());
        }
    }
    assert!(
        worst <= secs * 0.05,
        "a video packet arrived {worst:.3} s off its media time"
    );
    eprintln!("20 s title: {took:.3} s, worst video packet {worst:.3} s off schedule");
}

/// Player Cache-Control (RFC 2326 §12.8): `only-if-cached` gets 504 while
/// the title is not held, without asking the origin; once held it plays
/// with no origin contact at all. `no-cache` on a held title goes to the
/// origin (DESCRIBE there; with SETUP, a SETUP and PLAY there too).
#[test]
fn player_cache_control_no_cache_and_only_if_cached() {
    let rig = Rig::start(6);
    let only = [("Cache-Control", "only-if-cached")];
    let mut player = rig.player();
    let resp = player.describe(&only);
    assert_eq!(resp.status(), 504, "{resp:?}");
    assert_eq!(rig.origin.requests("").len(), 0, "504 asked the origin");
    drop(player);

    rig.fill();
    let seen = rig.origin.requests("").len();
    let mut player = rig.player();
    assert_eq!(player.describe(&only).status(), 200);
    player.setup_all(&only);
    player.play(None);
    let got = read_first_of_each(&mut player);
    assert!(!got.is_empty());
    player.send("TEARDOWN", &rig.url(), &[]);
    drop(player);
    assert_eq!(
        rig.origin.requests("").len(),
        seen,
        "an only-if-cached play contacted the origin: {:?}",
        &rig.origin.requests("")[seen..]
    );

    let no_cache = [("Cache-Control", "no-cache")];
    let (describes, (setups, plays)) = (rig.origin.requests("DESCRIBE").len(), rig.origin_plays());
    let mut player = rig.player();
    assert_eq!(player.describe(&no_cache).status(), 200);
    assert_eq!(
        rig.origin.wait_count(
            "ORIGIN request method=DESCRIBE",
            describes + 1,
            Duration::from_secs(10)
        ),
        describes + 1,
        "no-cache DESCRIBE did not reach the origin"
    );
    player.setup_all(&no_cache);
    let resp = player.send("PLAY", &rig.url(), &[]);
    assert_eq!(resp.status(), 200, "{resp:?}");
    read_first_of_each(&mut player);
    assert_eq!(
        rig.origin.wait_count(
            "ORIGIN request method=PLAY",
            plays + 1,
            Duration::from_secs(10)
        ),
        plays + 1,
        "no-cache play did not reach the origin"
    );
    assert!(rig.origin.requests("SETUP").len() > setups);
    player.send("TEARDOWN", &rig.url(), &[]);
}

/// `PLAY Range: npt=2-4` of a cached title: the answer says 2-4, the first
/// video packet is the keyframe at or before 2 s, and packets stop just
/// before 4 s of media time (by their RTP timestamps).
#[test]
fn range_with_an_end_stops_there() {
    let rig = Rig::start(6);
    rig.fill();
    let mut player = rig.player();
    player.describe(&[]);
    player.setup_all(&[]);
    let played = player.play(Some("npt=2-4"));
    assert!(
        (1.0..=2.0).contains(&played.start) && played.range.ends_with("-4.000"),
        "Range answer {:?}",
        played.range
    );
    // It plays ~2 s and then goes quiet; 1.5 s of silence ends the read.
    let mut packets = Vec::new();
    while let Some(p) = player.next(Duration::from_millis(1500)) {
        packets.push(p);
        assert!(packets.len() < 100_000, "packets never stop");
    }
    let first = first_rtp(&packets, VIDEO);
    assert!(first.starts_h264_keyframe(), "{:?}", first.h264_nal_type());
    for track in [VIDEO, AUDIO] {
        let times: Vec<f64> = packets
            .iter()
            .filter(|p| p.track == track)
            .filter_map(|p| p.rtp())
            .map(|rtp| player.media_time(&played, track, rtp.timestamp))
            .collect();
        let (lo, hi) = times
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        assert!(
            lo >= played.start - 0.001 && (3.8..4.0).contains(&hi),
            "track {track}: packets from {lo} s to {hi} s for npt=2-4"
        );
    }
}
