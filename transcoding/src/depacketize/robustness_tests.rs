//! Whatever the bytes, no depacketizer panics.

use proptest::prelude::*;

use super::for_track;
use super::test_util::{packet, run_with, spec, Stored, AAC_HBR};
use crate::frame::TrackSpec;

/// One of each depacketizer, all on payload type 96.
fn specs() -> Vec<TrackSpec> {
    vec![
        spec("H264", 96, 90000, "packetization-mode=1"),
        spec("H265", 96, 90000, ""),
        spec("MPEG4-GENERIC", 96, 48000, AAC_HBR),
        // Every AU-header field in use, auxiliary data too.
        spec(
            "MPEG4-GENERIC",
            96,
            48000,
            "config=1188;sizelength=6;indexlength=2;indexdeltalength=2;ctsdeltalength=5;\
             dtsdeltalength=4;randomaccessindication=1;streamstateindication=3;auxiliarydatasizelength=7",
        ),
        spec("MP4A-LATM", 96, 48000, "cpresent=0;config=410023103fc0"),
        spec("PCMU", 96, 8000, ""),
        spec("opus", 96, 48000, ""),
    ]
}

/// Payloads behind a valid header: sequence steps of 0..3 (duplicates,
/// gaps), timestamp steps, markers, new runs.
fn rtp_packets() -> impl Strategy<Value = Vec<Stored>> {
    let one = (
        0u16..3,
        0u32..2,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    proptest::collection::vec(one, 0..60).prop_map(|v| {
        let (mut seq, mut ts) = (0u16, 0u32);
        v.into_iter()
            .enumerate()
            .map(|(i, (dseq, dts, marker, run, payload))| {
                seq = seq.wrapping_add(dseq);
                ts = ts.wrapping_add(dts * 3000);
                (
                    packet(96, seq, ts, marker, &payload),
                    i as u64,
                    run && i % 7 == 0,
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn byte_soup_never_panics(
        raw in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..80), any::<bool>()), 0..40),
    ) {
        let packets: Vec<Stored> = raw.into_iter().map(|(b, d)| (b, 0, d)).collect();
        for s in specs() {
            let mut d = for_track(2, &s).expect("supported");
            for f in run_with(d.as_mut(), &packets) {
                prop_assert_eq!(f.track, 2);
            }
            let _ = d.codec();
        }
    }

    #[test]
    fn random_payloads_never_panic(packets in rtp_packets()) {
        for s in specs() {
            let mut d = for_track(0, &s).expect("supported");
            let frames = run_with(d.as_mut(), &packets);
            prop_assert!(frames.iter().all(|f| !f.data.is_empty()));
            let stats = d.stats();
            prop_assert!(stats.reordered_packets <= packets.len() as u64);
        }
    }
}
