use super::*;
use crate::range::{Npt, NptStart};
use proptest::prelude::*;

/// What gst-rtsp-server 1.22 answers for an H.264 + AAC on-demand MKV.
const GST_H264_AAC: &str = "v=0\r\n\
o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n\
s=Session streamed with GStreamer\r\n\
i=rtsp-server\r\n\
t=0 0\r\n\
a=tool:GStreamer\r\n\
a=type:broadcast\r\n\
a=range:npt=0-20.000\r\n\
a=control:*\r\n\
m=video 0 RTP/AVP 96\r\n\
c=IN IP4 0.0.0.0\r\n\
b=AS:2097\r\n\
a=rtpmap:96 H264/90000\r\n\
a=framerate:25\r\n\
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAHqzZQKAv+XARAAADAAEAAAMAMg8WLZY=,aOvjyyLA;profile-level-id=64001E\r\n\
a=control:stream=0\r\n\
a=ts-refclk:local\r\n\
a=mediaclk:sender\r\n\
m=audio 0 RTP/AVP 97\r\n\
c=IN IP4 0.0.0.0\r\n\
b=AS:128\r\n\
a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
a=fmtp:97 streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1190;sizelength=13;indexlength=3;indexdeltalength=3\r\n\
a=control:stream=1\r\n\
a=ts-refclk:local\r\n\
a=mediaclk:sender\r\n";

#[test]
fn parses_gstreamer_h264_aac() {
    let sdp = Sdp::parse(GST_H264_AAC).unwrap();
    assert_eq!(sdp.session_control.as_deref(), Some("*"));
    assert_eq!(
        sdp.range(),
        Some(PlayRange {
            start: NptStart::At(Npt::ZERO),
            end: Some(Npt::from_secs(20))
        })
    );
    assert_eq!(sdp.media.len(), 2);
    let v = &sdp.media[0];
    assert_eq!(
        (v.kind.as_str(), v.port, v.protocol.as_str()),
        ("video", 0, "RTP/AVP")
    );
    assert_eq!(v.payload_types(), vec![96]);
    assert_eq!(v.rtpmap(96).unwrap().encoding, "H264");
    assert_eq!(v.clock_rate(96), Some(90000));
    assert!(v.fmtp(96).unwrap().starts_with("packetization-mode=1;"));
    let a = &sdp.media[1];
    assert_eq!(
        a.rtpmap(97),
        Some(&RtpMap {
            payload_type: 97,
            encoding: "MPEG4-GENERIC".into(),
            clock_rate: 48000,
            channels: Some(2)
        })
    );
    assert_eq!(a.control.as_deref(), Some("stream=1"));
    assert_eq!(sdp.text(), GST_H264_AAC);
}

#[test]
fn resolves_controls_rfc2326_c11() {
    let sdp = Sdp::parse(GST_H264_AAC).unwrap();
    let req = Url::parse("rtsp://127.0.0.1:8554/test").unwrap();
    let base = base_url(&req, Some("rtsp://127.0.0.1:8554/test/"), None);
    assert_eq!(
        sdp.aggregate_url(&base).unwrap().as_str(),
        "rtsp://127.0.0.1:8554/test/"
    );
    let tracks = sdp.track_urls(&base).unwrap();
    assert_eq!(tracks[0].as_str(), "rtsp://127.0.0.1:8554/test/stream=0");
    // No Content-Base: the request URL is treated as a directory.
    let tracks = sdp.track_urls(&base_url(&req, None, None)).unwrap();
    assert_eq!(tracks[1].as_str(), "rtsp://127.0.0.1:8554/test/stream=1");
    // Content-Location relative to the request URL.
    assert_eq!(
        base_url(&req, None, Some("other/")).as_str(),
        "rtsp://127.0.0.1:8554/other/"
    );
    // Absolute control (Hikvision style) and "*" at media level.
    let abs = resolve_control(
        &base,
        Some("rtsp://10.0.0.1:554/Streaming/Channels/101/trackID=1"),
    )
    .unwrap();
    assert_eq!(abs.host_str(), Some("10.0.0.1"));
    assert_eq!(resolve_control(&base, Some("*")).unwrap(), base);
    assert_eq!(resolve_control(&base, None).unwrap(), base);
}

#[test]
fn rewrites_only_control_lines() {
    let sdp = Sdp::parse(GST_H264_AAC).unwrap();
    let out = sdp.rewrite_controls(
        Some("rtsp://proxy:8554/cams/front/"),
        &[
            "rtsp://proxy:8554/cams/front/track0".into(),
            "rtsp://proxy:8554/cams/front/track1".into(),
        ],
    );
    let expected = GST_H264_AAC
        .replace("a=control:*", "a=control:rtsp://proxy:8554/cams/front/")
        .replace(
            "a=control:stream=0",
            "a=control:rtsp://proxy:8554/cams/front/track0",
        )
        .replace(
            "a=control:stream=1",
            "a=control:rtsp://proxy:8554/cams/front/track1",
        );
    assert_eq!(out, expected);
}

#[test]
fn adds_missing_control_lines() {
    let text = "v=0\no=- 0 0 IN IP4 1.2.3.4\ns=x\nt=0 0\nm=video 0 RTP/AVP 26\n";
    let sdp = Sdp::parse(text).unwrap();
    assert_eq!(sdp.media[0].clock_rate(26), Some(90000));
    let out = sdp.rewrite_controls(Some("rtsp://p/a"), &["rtsp://p/a/t0".into()]);
    assert_eq!(
        out,
        "v=0\no=- 0 0 IN IP4 1.2.3.4\ns=x\nt=0 0\na=control:rtsp://p/a\nm=video 0 RTP/AVP 26\na=control:rtsp://p/a/t0\n"
    );
    // Without a final newline.
    let sdp = Sdp::parse("v=0\r\nm=audio 0 RTP/AVP 0").unwrap();
    assert_eq!(
        sdp.rewrite_controls(None, &["t".into()]),
        "v=0\r\nm=audio 0 RTP/AVP 0\r\na=control:t\r\n"
    );
}

#[test]
fn names_bad_lines() {
    assert_eq!(
        Sdp::parse("v=0\r\nm=video x RTP/AVP 96\r\n"),
        Err(SdpError::Malformed {
            line: 2,
            what: "bad m= line".into()
        })
    );
    assert!(matches!(
        Sdp::parse("o=- 1 1 IN IP4 x\r\n"),
        Err(SdpError::Malformed { line: 1, .. })
    ));
    assert!(matches!(
        Sdp::parse("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264\r\n"),
        Err(SdpError::Malformed { line: 3, .. })
    ));
    assert!(matches!(Sdp::parse(""), Err(SdpError::Malformed { .. })));
    assert!(matches!(
        Sdp::parse("<html>\n"),
        Err(SdpError::Malformed { .. })
    ));
}

proptest! {
    #[test]
    fn parse_never_panics_and_text_round_trips(s in "\\PC{0,300}") {
        if let Ok(sdp) = Sdp::parse(&s) {
            prop_assert_eq!(sdp.text(), s.clone());
            let tracks: Vec<String> = (0..sdp.media.len()).map(|i| format!("t{i}")).collect();
            let again = Sdp::parse(&sdp.rewrite_controls(Some("agg"), &tracks)).unwrap();
            prop_assert_eq!(again.media.len(), sdp.media.len());
            for m in &again.media {
                prop_assert!(m.control.as_deref().is_some_and(|c| c.starts_with('t')));
            }
        }
    }

    #[test]
    fn rewrite_of_mutated_lines_round_trips(lines in proptest::collection::vec("[a-z]=[ -~]{0,20}", 0..20)) {
        let text = format!("v=0\r\n{}", lines.iter().map(|l| format!("{l}\r\n")).collect::<String>());
        if let Ok(sdp) = Sdp::parse(&text) {
            let tracks: Vec<String> = (0..sdp.media.len()).map(|i| format!("rtsp://p/t{i}")).collect();
            let out = sdp.rewrite_controls(None, &tracks);
            let again = Sdp::parse(&out).unwrap();
            for (i, m) in again.media.iter().enumerate() {
                prop_assert_eq!(m.control.clone(), Some(format!("rtsp://p/t{i}")));
            }
        }
    }
}
