//! The origin client against the scripted fake origin (`fake.rs`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::fake::{After, Auth, FakeOrigin, Script, PASSWORD, USER};
use super::session::EVENT_QUEUE;
use super::*;
use streamcache_types::Npt;

fn target(origin: &FakeOrigin, transport: TransportPref) -> OriginTarget {
    OriginTarget {
        url: origin.url(),
        username: None,
        password: None,
        transport,
        connect_timeout: Duration::from_secs(2),
        udp_fallback: Duration::from_millis(300),
    }
}

fn with_credentials(mut t: OriginTarget, password: &str) -> OriginTarget {
    t.username = Some(USER.into());
    t.password = Some(password.into());
    t
}

/// Receives until `n` RTP packets arrived; returns them per track.
async fn rtp_packets(events: &mut mpsc::Receiver<OriginEvent>, n: usize) -> Vec<usize> {
    let mut per_track = vec![0; 2];
    let mut total = 0;
    while total < n {
        match timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(OriginEvent::Packet {
                track,
                rtcp: false,
                data,
            })) => {
                assert_eq!(data[0] >> 6, 2, "RTP version");
                per_track[track] += 1;
                total += 1;
            }
            Ok(Some(OriginEvent::Packet { .. })) => {}
            other => panic!("after {total} packets: {other:?}"),
        }
    }
    per_track
}

async fn end_reason(events: &mut mpsc::Receiver<OriginEvent>) -> EndReason {
    loop {
        match timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(OriginEvent::Ended { reason })) => return reason,
            Ok(Some(OriginEvent::Packet { .. })) => {}
            other => panic!("no Ended event: {other:?}"),
        }
    }
}

#[tokio::test]
async fn describe_reads_tracks_range_and_cache_headers() {
    let origin = FakeOrigin::start(Script::default()).await;
    let d = describe(&target(&origin, TransportPref::Auto))
        .await
        .unwrap();
    assert_eq!(d.sdp_text, fake::SDP);
    assert_eq!(d.base_url.as_str(), format!("rtsp://{}/test/", origin.addr));
    assert_eq!(d.sdp.aggregate_url(&d.base_url).unwrap(), d.base_url);
    assert_eq!(d.tracks.len(), 2);
    assert_eq!(
        d.tracks[0].control_url.as_str(),
        format!("rtsp://{}/test/stream=0", origin.addr)
    );
    assert_eq!(
        (d.tracks[0].payload_type, d.tracks[0].clock_rate),
        (96, 90000)
    );
    assert_eq!(
        (d.tracks[0].media.as_str(), d.tracks[0].encoding.as_str()),
        ("video", "H264")
    );
    assert_eq!(
        (d.tracks[1].clock_rate, d.tracks[1].encoding.as_str()),
        (48000, "MPEG4-GENERIC")
    );
    assert_eq!(
        d.range,
        Some(NptRange {
            start: Npt::ZERO,
            end: Some(Npt::from_secs(20))
        })
    );
    assert_eq!(d.cache_headers.etag.as_deref(), Some("\"abc\""));
    assert_eq!(d.cache_headers.cache_control.as_deref(), Some("max-age=60"));
    assert!(d.cache_headers.last_modified.is_some() && d.cache_headers.expires.is_none());
}

#[tokio::test]
async fn digest_and_basic_auth_retry_once() {
    for auth in [Auth::Digest, Auth::Basic] {
        let origin = FakeOrigin::start(Script {
            auth,
            ..Script::default()
        })
        .await;
        let t = with_credentials(target(&origin, TransportPref::Tcp), PASSWORD);
        let d = describe(&t).await.unwrap();
        assert_eq!(origin.count("DESCRIBE"), 2, "one 401, one retry");
        let (session, mut events) = OriginSession::start(&t, &d, None).await.unwrap();
        rtp_packets(&mut events, 4).await;
        session.teardown().await;
        assert_eq!(origin.count("TEARDOWN"), 1);

        let wrong = with_credentials(target(&origin, TransportPref::Tcp), "wrong");
        let e = describe(&wrong).await.unwrap_err();
        assert!(matches!(e, OriginError::Unauthorized { .. }), "{e:?}");
        assert_eq!(e.rtsp_status(), 502);
        let text = format!("{e} {e:?} {wrong:?}");
        assert!(
            !text.contains("wrong\"") && !text.contains(PASSWORD),
            "{text}"
        );
    }
    let origin = FakeOrigin::start(Script {
        auth: Auth::Digest,
        ..Script::default()
    })
    .await;
    let e = describe(&target(&origin, TransportPref::Auto))
        .await
        .unwrap_err();
    assert!(
        matches!(e, OriginError::Unauthorized { .. }),
        "no credentials: {e:?}"
    );
}

#[tokio::test]
async fn errors_map_to_player_statuses() {
    let origin = FakeOrigin::start(Script {
        describe_status: 404,
        ..Script::default()
    })
    .await;
    let e = describe(&target(&origin, TransportPref::Auto))
        .await
        .unwrap_err();
    assert_eq!(e.rtsp_status(), 404, "{e}");

    // Nothing listens on the port any more: refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut t = target(&origin, TransportPref::Auto);
    t.url = url::Url::parse(&format!("rtsp://127.0.0.1:{port}/x")).unwrap();
    let e = describe(&t).await.unwrap_err();
    assert_eq!(e.rtsp_status(), 503, "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{port}")),
        "names the origin: {e}"
    );

    // An origin that accepts but never answers.
    let mute = FakeOrigin::start(Script {
        mute: true,
        ..Script::default()
    })
    .await;
    let mut t = target(&mute, TransportPref::Auto);
    t.connect_timeout = Duration::from_millis(300);
    let e = describe(&t).await.unwrap_err();
    assert!(matches!(e, OriginError::ResponseTimeout { .. }), "{e:?}");
    assert_eq!(e.rtsp_status(), 504);
}

#[tokio::test]
async fn udp_session_delivers_packets_and_tears_down() {
    let origin = FakeOrigin::start(Script {
        packets: 20,
        ..Script::default()
    })
    .await;
    let t = target(&origin, TransportPref::Udp);
    let d = describe(&t).await.unwrap();
    let (session, mut events) = OriginSession::start(&t, &d, Some(Npt::from_millis(10_500)))
        .await
        .unwrap();
    let per_track = rtp_packets(&mut events, 40).await;
    assert_eq!(per_track, vec![20, 20]);
    session.teardown().await;
    let log = origin.log();
    let setups: Vec<_> = log.iter().filter(|l| l.starts_with("SETUP")).collect();
    assert_eq!(setups.len(), 2);
    for s in setups {
        let spec = streamcache_rtsp::transport::TransportSpec::parse(&s[6..]).unwrap();
        let (rtp, rtcp) = spec.client_port.unwrap();
        assert!(rtp % 2 == 0 && rtcp == rtp + 1, "{s}");
    }
    assert_eq!(origin.count("TEARDOWN"), 1);
    assert_eq!(origin.count("OPTIONS"), 1);
}

#[tokio::test]
async fn auto_falls_back_to_tcp_when_udp_is_silent_or_refused() {
    for script in [
        Script {
            silent_udp: true,
            ..Script::default()
        },
        Script {
            refuse_udp: true,
            ..Script::default()
        },
    ] {
        let refused = script.refuse_udp;
        let origin = FakeOrigin::start(script).await;
        let t = target(&origin, TransportPref::Auto);
        let d = describe(&t).await.unwrap();
        let (session, mut events) = OriginSession::start(&t, &d, None).await.unwrap();
        rtp_packets(&mut events, 20).await;
        session.teardown().await;
        let log = origin.log();
        let udp_setups = log
            .iter()
            .filter(|l| l.starts_with("SETUP RTP/AVP;"))
            .count();
        let tcp_setups = log
            .iter()
            .filter(|l| l.starts_with("SETUP RTP/AVP/TCP"))
            .count();
        assert_eq!(
            (udp_setups, tcp_setups),
            (if refused { 1 } else { 2 }, 2),
            "{log:?}"
        );
        // The silent UDP session was torn down before TCP was set up.
        assert_eq!(
            origin.count("TEARDOWN"),
            if refused { 1 } else { 2 },
            "{log:?}"
        );
    }
}

#[tokio::test]
async fn forced_udp_without_media_fails() {
    let origin = FakeOrigin::start(Script {
        silent_udp: true,
        ..Script::default()
    })
    .await;
    let t = target(&origin, TransportPref::Udp);
    let d = describe(&t).await.unwrap();
    let e = OriginSession::start(&t, &d, None).await.err().unwrap();
    assert!(matches!(e, OriginError::NoMedia { .. }), "{e:?}");
    assert_eq!(e.rtsp_status(), 504);
    assert_eq!(origin.count("SETUP RTP/AVP/TCP"), 0);
}

#[tokio::test]
async fn origin_bye_and_close_end_the_session() {
    for (transport, after) in [
        (TransportPref::Tcp, After::Bye),
        (TransportPref::Udp, After::Bye),
        (TransportPref::Tcp, After::Close),
        (TransportPref::Udp, After::Close),
    ] {
        let origin = FakeOrigin::start(Script {
            after,
            ..Script::default()
        })
        .await;
        let t = target(&origin, transport);
        let d = describe(&t).await.unwrap();
        let (session, mut events) = OriginSession::start(&t, &d, None).await.unwrap();
        let reason = end_reason(&mut events).await;
        match after {
            After::Bye => assert!(matches!(reason, EndReason::Bye), "{reason:?}"),
            _ => assert!(matches!(reason, EndReason::Eof), "{reason:?}"),
        }
        session.teardown().await;
    }
}

/// Over UDP the BYE (RTCP socket) can be read before a track's last RTP
/// packets (RTP socket): the session still delivers them before it ends,
/// also when the origin closes the connection meanwhile. Ending at the BYE
/// lost a title's last audio packet from the recording.
#[tokio::test]
async fn udp_packets_read_after_the_bye_still_arrive() {
    for after in [
        After::ByeBeforeLastPacket,
        After::ByeBeforeLastPacketThenClose,
    ] {
        let origin = FakeOrigin::start(Script {
            after,
            ..Script::default()
        })
        .await;
        let t = target(&origin, TransportPref::Udp);
        let d = describe(&t).await.unwrap();
        let (session, mut events) = OriginSession::start(&t, &d, None).await.unwrap();
        let mut per_track = [0; 2];
        loop {
            match timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Some(OriginEvent::Packet {
                    track, rtcp: false, ..
                })) => per_track[track] += 1,
                Ok(Some(OriginEvent::Packet { .. })) => {}
                Ok(Some(OriginEvent::Ended { reason })) => {
                    assert!(matches!(reason, EndReason::Bye), "{reason:?}");
                    break;
                }
                other => panic!("after {per_track:?}: {other:?}"),
            }
        }
        let sent = Script::default().packets + 1;
        assert_eq!(per_track, [sent, sent]);
        session.teardown().await;
    }
}

/// On paused time: the clock jumps from one timer to the next, so two
/// keep-alive periods pass without waiting for them.
#[tokio::test(start_paused = true)]
async fn keeps_the_session_alive_at_half_its_timeout() {
    let origin = FakeOrigin::start(Script {
        session_timeout: 2,
        ..Script::default()
    })
    .await;
    let t = target(&origin, TransportPref::Tcp);
    let d = describe(&t).await.unwrap();
    let started = tokio::time::Instant::now();
    let (session, _events) = OriginSession::start(&t, &d, None).await.unwrap();
    // Each keep-alive is answered over loopback: wait for the second one
    // to reach the origin, one timer tick at a time.
    while origin.count("GET_PARAMETER") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no second keep-alive within two periods: {:?}",
            origin.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Half the timeout apart: the second one came after two seconds.
    assert!(started.elapsed() >= Duration::from_secs(2));
    session.teardown().await;
}

#[tokio::test]
async fn a_slow_consumer_loses_packets_but_never_blocks_the_session() {
    let origin = FakeOrigin::start(Script {
        packets: EVENT_QUEUE * 2,
        ..Script::default()
    })
    .await;
    let t = target(&origin, TransportPref::Tcp);
    let d = describe(&t).await.unwrap();
    let (session, mut events) = OriginSession::start(&t, &d, None).await.unwrap();
    // Do not read: the queue fills up while the origin sends twice as much.
    tokio::time::sleep(Duration::from_millis(500)).await;
    timeout(Duration::from_secs(5), session.teardown())
        .await
        .expect("teardown is not blocked by a full queue");
    assert_eq!(origin.count("TEARDOWN"), 1);
    let mut received = 0;
    while let Ok(Some(_)) = timeout(Duration::from_millis(100), events.recv()).await {
        received += 1;
    }
    assert_eq!(
        received, EVENT_QUEUE,
        "the queue held what it could, the rest was dropped"
    );
}

#[tokio::test]
async fn dropping_the_receiver_tears_down() {
    let origin = FakeOrigin::start(Script {
        packets: 200,
        ..Script::default()
    })
    .await;
    let t = target(&origin, TransportPref::Tcp);
    let d = describe(&t).await.unwrap();
    let (session, events) = OriginSession::start(&t, &d, None).await.unwrap();
    drop(events);
    timeout(Duration::from_secs(5), session.teardown())
        .await
        .unwrap();
    assert_eq!(origin.count("TEARDOWN"), 1);
}

fn stored_headers() -> CacheHeaders {
    CacheHeaders {
        last_modified: Some("Tue, 06 Feb 2024 10:00:00 GMT".into()),
        etag: Some("\"abc\"".into()),
        cache_control: Some("max-age=1".into()),
        expires: None,
    }
}

async fn revalidation(
    script: Script,
    stored: &CacheHeaders,
    sdp: &str,
) -> (FakeOrigin, Revalidation) {
    let origin = FakeOrigin::start(script).await;
    let stored = Stored {
        cache_headers: stored,
        sdp_text: sdp,
    };
    let verdict = revalidate(&target(&origin, TransportPref::Tcp), stored)
        .await
        .unwrap();
    (origin, verdict)
}

#[tokio::test]
async fn revalidation_sends_if_modified_since_and_reads_304() {
    let (origin, verdict) = revalidation(Script::default(), &stored_headers(), "").await;
    assert_eq!(
        origin.log(),
        ["DESCRIBE if-modified-since=Tue, 06 Feb 2024 10:00:00 GMT"]
    );
    let Revalidation::NotModified(headers) = verdict else {
        panic!("{verdict:?}");
    };
    // The 304's own headers replace the stored ones.
    assert_eq!(headers.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(headers.etag.as_deref(), Some("\"abc\""));
}

#[tokio::test]
async fn revalidation_200_with_the_same_validators_is_not_modified() {
    let script = Script {
        conditional: false,
        ..Script::default()
    };
    let (origin, verdict) = revalidation(script, &stored_headers(), "").await;
    assert_eq!(origin.count("DESCRIBE"), 1);
    assert!(
        matches!(verdict, Revalidation::NotModified(_)),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn revalidation_200_with_new_validators_is_changed() {
    let script = Script {
        cache_headers: "Last-Modified: Wed, 07 Feb 2024 10:00:00 GMT\r\nETag: \"abd\"\r\n",
        ..Script::default()
    };
    let (_origin, verdict) = revalidation(script, &stored_headers(), fake::SDP).await;
    let Revalidation::Changed(described) = verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!(described.tracks.len(), 2);
    assert_eq!(described.cache_headers.etag.as_deref(), Some("\"abd\""));
}

#[tokio::test]
async fn without_validators_the_sdp_decides() {
    let script = Script {
        cache_headers: "",
        ..Script::default()
    };
    let none = CacheHeaders::default();
    let (origin, same) = revalidation(script.clone(), &none, fake::SDP).await;
    assert_eq!(origin.log(), ["DESCRIBE "], "nothing to be conditional on");
    assert!(matches!(same, Revalidation::NotModified(_)), "{same:?}");
    let other = fake::SDP.replace("npt=0-20.000", "npt=0-30.000");
    let (_, changed) = revalidation(script, &none, &other).await;
    assert!(matches!(changed, Revalidation::Changed(_)), "{changed:?}");
}

#[tokio::test]
async fn revalidation_reports_an_unreachable_origin() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("rtsp://{}/test", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let t = OriginTarget {
        url,
        username: None,
        password: None,
        transport: TransportPref::Tcp,
        connect_timeout: Duration::from_secs(2),
        udp_fallback: Duration::from_millis(300),
    };
    let stored = Stored {
        cache_headers: &CacheHeaders::default(),
        sdp_text: "",
    };
    let e = revalidate(&t, stored).await.unwrap_err();
    assert!(matches!(e, OriginError::Connect { .. }), "{e:?}");
}
