//! The origin client against the real GStreamer RTSP server
//! (`tests/peers/origin.py`). Ignored by default: it needs python3-gi and
//! the GStreamer plugins, and takes a few seconds. Run with
//! `cargo test -p streamcache origin::peer_tests -- --ignored --nocapture`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::*;
use streamcache_types::Npt;

const PASSWORD: &str = "pw-not-in-logs";

struct Peer {
    child: Child,
    port: u16,
    /// The origin's event lines (`ORIGIN request method=…`).
    events: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn start(extra: &[&str]) -> Peer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/origin.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", "0", "--watch-stdin"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines.next().expect("origin prints READY").expect("utf-8");
            if let Some(p) = line.strip_prefix("READY port=") {
                break p.trim().parse().expect("port");
            }
        };
        // Keep draining the event log so the origin never blocks on stdout.
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Peer {
            child,
            port,
            events,
        }
    }

    fn requests(&self, method: &str) -> usize {
        let needle = format!("ORIGIN request method={method} ");
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&needle))
            .count()
    }

    fn target(&self, path: &str, transport: TransportPref, with_auth: bool) -> OriginTarget {
        OriginTarget {
            url: url::Url::parse(&format!("rtsp://127.0.0.1:{}/{path}", self.port)).unwrap(),
            username: with_auth.then(|| "user".to_owned()),
            password: with_auth.then(|| PASSWORD.to_owned()),
            transport,
            connect_timeout: Duration::from_secs(5),
            udp_fallback: Duration::from_secs(2),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin ends it (--watch-stdin); kill by PID if it lingers.
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts RTP and RTCP packets per track for `secs`, or until the end.
async fn receive(
    events: &mut tokio::sync::mpsc::Receiver<OriginEvent>,
    secs: u64,
) -> (Vec<usize>, Vec<usize>, Option<EndReason>) {
    let mut rtp = vec![0; 2];
    let mut rtcp = vec![0; 2];
    let deadline = Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(event)) = timeout(deadline - Instant::now(), events.recv()).await {
        match event {
            OriginEvent::Packet {
                track, rtcp: false, ..
            } => rtp[track] += 1,
            OriginEvent::Packet {
                track, rtcp: true, ..
            } => rtcp[track] += 1,
            OriginEvent::Ended { reason } => return (rtp, rtcp, Some(reason)),
        }
    }
    (rtp, rtcp, None)
}

#[tokio::test]
#[ignore = "needs the GStreamer RTSP server (python3-gi)"]
async fn live_over_udp_tcp_and_auto_with_digest() {
    let peer = Peer::start(&["--user", "user", "--password", PASSWORD, "--auth", "digest"]);
    for transport in [TransportPref::Udp, TransportPref::Tcp, TransportPref::Auto] {
        let t = peer.target("live", transport, true);
        let d = describe(&t).await.expect("describe");
        println!("{transport:?}: tracks {:?} range {:?}", d.tracks, d.range);
        let started = Instant::now();
        let (session, mut events) = OriginSession::start(&t, &d, None).await.expect("start");
        println!("{transport:?}: playing after {:?}", started.elapsed());
        let (rtp, rtcp, end) = receive(&mut events, 3).await;
        println!("{transport:?}: rtp {rtp:?} rtcp {rtcp:?} end {end:?}");
        assert!(rtp.iter().all(|&n| n > 20), "{rtp:?}");
        assert!(end.is_none());
        session.teardown().await;
    }
    assert_eq!(peer.requests("TEARDOWN"), 3);
    assert!(peer.requests("SETUP") >= 6);
    assert!(peer
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("auth=Digest")));
    assert!(!peer
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(PASSWORD)));
    let wrong = OriginTarget {
        password: Some("wrong".into()),
        ..peer.target("live", TransportPref::Tcp, true)
    };
    let e = describe(&wrong).await.unwrap_err();
    println!("wrong password: {e} -> {}", e.rtsp_status());
    let e = describe(&peer.target("nothing-here", TransportPref::Tcp, true))
        .await
        .unwrap_err();
    println!("unknown path: {e} -> {}", e.rtsp_status());
    assert_eq!(e.rtsp_status(), 404);
}

#[tokio::test]
#[ignore = "needs the GStreamer RTSP server (python3-gi) and ffmpeg"]
async fn on_demand_from_a_range_to_the_end() {
    let dir = std::env::temp_dir().join(format!("sc-origin-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let media = dir.join("title.mkv");
    let status = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=6",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=6"])
        .args([
            "-c:v", "libx264", "-g", "25", "-bf", "0", "-threads", "1", "-c:a", "aac",
        ])
        .arg(&media)
        .status()
        .unwrap();
    assert!(status.success());
    let peer = Peer::start(&["--media", media.to_str().unwrap()]);
    for transport in [TransportPref::Udp, TransportPref::Tcp] {
        let t = peer.target("vod", transport, false);
        let d = describe(&t).await.expect("describe");
        println!("{transport:?}: range {:?}", d.range);
        let (session, mut events) = OriginSession::start(&t, &d, Some(Npt::from_secs(3)))
            .await
            .expect("start");
        let (rtp, rtcp, end) = receive(&mut events, 15).await;
        println!("{transport:?}: rtp {rtp:?} rtcp {rtcp:?} end {end:?}");
        assert!(rtp[0] > 0 && end.is_some());
        session.teardown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
