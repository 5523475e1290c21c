//! The daemon's origin client (`streamcache::origin`) against the real
//! GStreamer RTSP server, without the proxy around it: DESCRIBE, SETUP over
//! UDP, TCP interleaved and auto, Digest authentication, and an on-demand
//! title played from a range to its end. (These were unit tests ignored by
//! default; here, like every end-to-end test, they fail naming the package
//! when the origin's peers are missing.)

mod support;

use std::time::Duration;

use streamcache::origin::{
    describe, EndReason, OriginEvent, OriginSession, OriginTarget, TransportPref,
};
use streamcache_types::Npt;
use tokio::time::{timeout, Instant};

use support::*;

const USER: &str = "user";
const PASSWORD: &str = "pw-not-in-logs";

fn target(origin: &Origin, path: &str, transport: TransportPref, auth: bool) -> OriginTarget {
    OriginTarget {
        url: url::Url::parse(&origin.url(path)).expect("origin URL"),
        username: auth.then(|| USER.to_owned()),
        password: auth.then(|| PASSWORD.to_owned()),
        transport,
        connect_timeout: Duration::from_secs(5),
        udp_fallback: Duration::from_secs(2),
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
async fn live_over_udp_tcp_and_auto_with_digest() {
    let origin = Origin::start(OriginOpts::new().auth(AuthScheme::Digest, USER, PASSWORD));
    for transport in [TransportPref::Udp, TransportPref::Tcp, TransportPref::Auto] {
        let t = target(&origin, "/live", transport, true);
        let d = describe(&t).await.expect("describe");
        let (session, mut events) = OriginSession::start(&t, &d, None).await.expect("start");
        let (rtp, rtcp, end) = receive(&mut events, 3).await;
        assert!(
            rtp.iter().all(|&n| n > 20),
            "{transport:?}: rtp {rtp:?} rtcp {rtcp:?}"
        );
        assert!(end.is_none(), "{transport:?}: {end:?}");
        session.teardown().await;
    }
    let teardowns = origin.wait_count("ORIGIN request method=TEARDOWN ", 3, PLAYER_LIMIT);
    assert_eq!(teardowns, 3, "{:#?}", origin.lines());
    assert!(origin.requests("SETUP").len() >= 6, "{:#?}", origin.lines());
    let lines = origin.lines();
    assert!(
        lines.iter().any(|l| l.contains("auth=Digest")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains(PASSWORD)), "{lines:#?}");

    let wrong = OriginTarget {
        password: Some("wrong".into()),
        ..target(&origin, "/live", TransportPref::Tcp, true)
    };
    // A player is answered 502: the fault is between the proxy and origin.
    let e = describe(&wrong).await.expect_err("a wrong password");
    assert_eq!(e.rtsp_status(), 502, "{e}");
    assert!(e.to_string().contains("refused authorization"), "{e}");
    let e = describe(&target(&origin, "/nothing-here", TransportPref::Tcp, true))
        .await
        .expect_err("an unknown path");
    assert_eq!(e.rtsp_status(), 404, "{e}");
}

#[tokio::test]
async fn on_demand_from_a_range_to_the_end() {
    let origin = Origin::start(OriginOpts::new().media(test_media(6)));
    for transport in [TransportPref::Udp, TransportPref::Tcp] {
        let t = target(&origin, "/vod", transport, false);
        let d = describe(&t).await.expect("describe");
        let (session, mut events) = OriginSession::start(&t, &d, Some(Npt::from_secs(3)))
            .await
            .expect("start");
        let (rtp, rtcp, end) = receive(&mut events, 15).await;
        assert!(
            rtp[0] > 0 && end.is_some(),
            "{transport:?}: rtp {rtp:?} rtcp {rtcp:?} end {end:?}"
        );
        session.teardown().await;
    }
}
