use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn rtp(payload: &[u8]) -> Vec<u8> {
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(96)
        .sequence(rtp_rs::Seq::from(65535))
        .timestamp(0xdead_beef)
        .ssrc(0x1234_5678)
        .marked(true)
        .payload(payload)
        .build()
        .unwrap()
}

#[test]
fn reads_and_rewrites_headers() {
    let mut p = rtp(&[0x65, 1, 2, 3]);
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(
        (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc),
        (true, 96, 65535, 0xdead_beef, 0x1234_5678)
    );
    assert_eq!(h.payload(&p), &[0x65, 1, 2, 3]);
    let v = RtpView::parse(&p).unwrap();
    assert_eq!((v.version(), v.marker(), v.payload_type()), (2, true, 96));
    assert_eq!(
        (v.sequence_number(), v.timestamp(), v.ssrc()),
        (65535, 0xdead_beef, 0x1234_5678)
    );
    assert_eq!(v.payload(), &[0x65, 1, 2, 3]);
    assert_eq!(v.header(), &h);
    rewrite(&mut p, 7, 9000, 42).unwrap();
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(
        (h.sequence, h.timestamp, h.ssrc, h.marker),
        (7, 9000, 42, true)
    );
    assert!(rewrite(&mut [0x80; 11], 0, 0, 0).is_err());
    assert_eq!(ssrc_of(&p), Some(42));
    assert_eq!(ssrc_of(&p[..11]), None, "shorter than a header");
    p[0] &= 0x3f;
    assert_eq!(ssrc_of(&p), None, "not version 2");
}

#[test]
fn padding_and_extension() {
    let p = rtp_rs::RtpPacketBuilder::new()
        .payload_type(97)
        .extension(0xbede, &[1, 2, 3, 4])
        .padded(rtp_rs::Pad::round_to(4))
        .payload(&[9, 9, 9])
        .build()
        .unwrap();
    let h = RtpHeader::parse(&p).unwrap();
    assert!(h.extension);
    assert_eq!(h.padding, 1);
    assert_eq!(h.payload_offset, 12 + 4 + 4);
    assert_eq!(h.payload(&p), &[9, 9, 9]);
    assert!(RtpHeader::parse(&[0x80, 0, 0]).is_err());
    assert!(RtpHeader::parse(&[0x40; 12]).is_err());
}

#[test]
fn h264_random_access() {
    let c = Codec::from_encoding_name("h264");
    assert_eq!(c, Codec::H264);
    assert!(is_random_access(c, &[0x65, 0x88])); // IDR slice
    assert!(!is_random_access(c, &[0x41, 0x9a])); // non-IDR slice
    assert!(has_parameter_sets(c, &[0x67, 0x64, 0x00, 0x1e])); // SPS
    assert!(!is_random_access(c, &[0x67, 0x64]));
    // STAP-A holding SPS + PPS + IDR (as some cameras send).
    let stap = [0x18, 0, 2, 0x67, 0x64, 0, 2, 0x68, 0xee, 0, 2, 0x65, 0x88];
    assert!(is_random_access(c, &stap) && has_parameter_sets(c, &stap));
    // STAP-A truncated in the middle of a unit: only complete units count.
    assert!(!is_random_access(c, &stap[..12]));
    // FU-A: start fragment of an IDR, then a middle fragment.
    assert!(is_random_access(c, &[0x7c, 0x85, 0x88]));
    assert!(!is_random_access(c, &[0x7c, 0x05, 0x88]));
    assert!(!is_random_access(c, &[]));
}

#[test]
fn h265_random_access() {
    let c = Codec::from_encoding_name("H265");
    // IDR_W_RADL (19): header 0x26 0x01.
    assert!(is_random_access(c, &[0x26, 0x01, 0xaf]));
    // TRAIL_R (1): 0x02 0x01.
    assert!(!is_random_access(c, &[0x02, 0x01, 0xaf]));
    // VPS (32) 0x40 0x01, SPS (33) 0x42 0x01, PPS (34) 0x44 0x01.
    for h in [[0x40, 0x01], [0x42, 0x01], [0x44, 0x01]] {
        assert!(has_parameter_sets(c, &h));
    }
    // AP (48) with VPS and CRA (21).
    let ap = [0x60, 0x01, 0, 2, 0x40, 0x01, 0, 3, 0x2a, 0x01, 0xff];
    assert!(is_random_access(c, &ap) && has_parameter_sets(c, &ap));
    // FU (49): start of IDR_N_LP (20), then an end fragment.
    assert!(is_random_access(c, &[0x62, 0x01, 0x94]));
    assert!(!is_random_access(c, &[0x62, 0x01, 0x54]));
    assert_eq!(Codec::from_encoding_name("MPEG4-GENERIC"), Codec::Other);
    assert!(is_random_access(Codec::Other, &[1]));
}

#[test]
fn rtcp_sender_report_round_trip() {
    let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
    let ntp = ntp_timestamp(t);
    assert_eq!(ntp >> 32, 1_700_000_000 + 2_208_988_800);
    assert_eq!(ntp & 0xffff_ffff, 1 << 31); // half a second
    let sr = SenderReport {
        ssrc: 7,
        ntp,
        rtp_time: 90_000,
        packet_count: 10,
        octet_count: 12_000,
    };
    let bytes = build_sender_report(&sr, "streamcache");
    assert_eq!(bytes.len() % 4, 0);
    let s = parse_rtcp(&bytes).unwrap();
    assert_eq!(s.sender_reports, vec![sr]);
    assert!(s.bye.is_empty() && !contains_bye(&bytes));
}

#[test]
fn rtcp_receiver_report_and_bye() {
    let block = ReportBlock {
        ssrc: 99,
        fraction_lost: 64,
        cumulative_lost: -3,
        highest_seq: 70_000,
        jitter: 12,
        last_sr: 5,
        delay_since_last_sr: 6,
    };
    let rr = build_receiver_report(1, &[block], "x");
    let s = parse_rtcp(&rr).unwrap();
    assert_eq!(s.report_blocks, vec![(1, block)]);
    let bye = build_bye(5);
    assert!(contains_bye(&bye));
    assert_eq!(parse_rtcp(&bye).unwrap().bye, vec![5]);
    // A gst-style compound: SR + SDES + BYE.
    let mut compound = build_sender_report(
        &SenderReport {
            ssrc: 5,
            ntp: 1,
            rtp_time: 2,
            packet_count: 3,
            octet_count: 4,
        },
        "gst",
    );
    compound.extend_from_slice(&bye[8..]);
    assert!(contains_bye(&compound));
    assert!(parse_rtcp(&[0x80, 200, 0, 10, 0, 0]).is_err());
    assert!(parse_rtcp(&[0x80, 200, 0, 0]).is_err());
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = RtpHeader::parse(&bytes).map(|h| h.payload(&bytes).len());
        let _ = parse_rtcp(&bytes);
        for c in [Codec::H264, Codec::H265] {
            let _ = is_random_access(c, &bytes);
            let _ = has_parameter_sets(c, &bytes);
        }
    }

    #[test]
    fn report_block_round_trip(ssrc in any::<u32>(), fl in any::<u8>(), lost in -0x80_0000i32..0x80_0000, seq in any::<u32>()) {
        let b = ReportBlock { ssrc, fraction_lost: fl, cumulative_lost: lost, highest_seq: seq, ..Default::default() };
        let s = parse_rtcp(&build_receiver_report(3, &[b], "c")).unwrap();
        prop_assert_eq!(s.report_blocks, vec![(3, b)]);
    }
}
