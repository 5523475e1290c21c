//! AAC (RFC 3640 and LATM), G.711 and Opus on hand-built packets.

use streamcache_types::Npt;

use super::for_track;
use super::test_util::{packet, run, spec, Stored, AAC_HBR};
use crate::frame::Codec;

/// An AAC-hbr payload: AU-headers (13-bit size, 3-bit index 0) for
/// `sizes`, then `data`.
fn hbr(sizes: &[u16], data: &[u8]) -> Vec<u8> {
    let mut out = ((sizes.len() * 16) as u16).to_be_bytes().to_vec();
    for &size in sizes {
        out.extend_from_slice(&(size << 3).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn p(pt: u8, payload: &[u8], seq: u16, ts: u32, marker: bool, ms: u64) -> Stored {
    (packet(pt, seq, ts, marker, payload), ms, false)
}

fn aac() -> super::super::TrackSpec {
    spec("mpeg4-generic", 97, 48000, AAC_HBR)
}

#[test]
fn aac_several_aus_per_packet_are_timed_one_frame_apart() {
    let payload = hbr(&[2, 3, 1], &[1, 1, 2, 2, 2, 3]);
    let mut d = for_track(1, &aac()).expect("AAC");
    let frames = super::test_util::run_with(d.as_mut(), &[p(97, &payload, 1, 0, true, 1000)]);
    let got: Vec<_> = frames
        .iter()
        .map(|f| (f.pts.as_ns(), f.data.to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            (1_000_000_000, vec![1, 1]),
            (1_021_333_333, vec![2, 2, 2]),
            (1_042_666_666, vec![3]),
        ]
    );
    assert!(frames
        .iter()
        .all(|f| f.keyframe && f.track == 1 && !f.discontinuity));
    let config = bytes::Bytes::from_static(&[0x11, 0x88]);
    assert_eq!(
        d.codec(),
        Some(Codec::Aac {
            config,
            sample_rate: 48000,
            channels: 1
        })
    );
    assert_eq!(d.stats(), Default::default());
}

#[test]
fn aac_fragmented_aus_are_put_back_together() {
    let packets = [
        p(97, &hbr(&[5], &[1, 2]), 1, 0, false, 0),
        p(97, &hbr(&[5], &[3, 4]), 2, 0, false, 0),
        p(97, &hbr(&[5], &[5]), 3, 0, true, 0),
        // The next one loses its middle: dropped; the one after follows a gap.
        p(97, &hbr(&[5], &[1, 2]), 4, 1024, false, 21),
        p(97, &hbr(&[5], &[5]), 6, 1024, true, 21),
        p(97, &hbr(&[1], &[9]), 7, 2048, true, 42),
        // Interleaved (a non-zero index delta), then a cut-short packet.
        p(97, &[0, 32, 0, 8, 0, 9, 1, 2], 8, 3072, true, 64),
        p(97, &hbr(&[2, 2], &[1, 2, 3]), 9, 4096, true, 85),
        p(97, &hbr(&[4], &[1, 2]), 10, 5120, false, 106), // never ends
    ];
    let (frames, stats) = run(&aac(), &packets);
    let got: Vec<_> = frames
        .iter()
        .map(|f| (f.data.to_vec(), f.discontinuity))
        .collect();
    assert_eq!(
        got,
        [
            (vec![1, 2, 3, 4, 5], false),
            (vec![9], true),
            (vec![1, 2], true)
        ]
    );
    assert_eq!(
        stats.dropped_frames, 3,
        "the gap, the second of the cut packet, the unfinished"
    );
    assert_eq!((stats.unsupported_packets, stats.malformed_packets), (1, 1));
}

#[test]
fn aac_without_config_is_unsupported() {
    for fmtp in [
        "mode=AAC-hbr;sizelength=13",
        "config=1188",
        "config=11;sizelength=13",
    ] {
        assert!(
            for_track(0, &spec("MPEG4-GENERIC", 97, 48000, fmtp)).is_err(),
            "{fmtp}"
        );
    }
}

fn latm(fmtp: &str) -> super::super::TrackSpec {
    spec("MP4A-LATM", 98, 48000, fmtp)
}

#[test]
fn latm_elements_with_length_runs_and_fragments() {
    let spec = latm("profile-level-id=1;cpresent=0;config=400023103fc0;object=2");
    let big: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
    let mut element = vec![0xff, 45];
    element.extend_from_slice(&big);
    let packets = [
        // Two AudioMuxElements in one packet.
        p(98, &[2, 7, 7, 1, 8], 1, 0, true, 0),
        // One element cut across two packets, marker on the last.
        p(98, &element[..100], 2, 2048, false, 43),
        p(98, &element[100..], 3, 2048, true, 43),
        // A length past the end.
        p(98, &[9, 1], 4, 3072, true, 64),
    ];
    let mut d = for_track(0, &spec).expect("LATM");
    let frames = super::test_util::run_with(d.as_mut(), &packets);
    let got: Vec<_> = frames
        .iter()
        .map(|f| (f.pts.as_ns(), f.data.to_vec()))
        .collect();
    assert_eq!(
        got,
        [(0, vec![7, 7]), (21_333_333, vec![8]), (43_000_000, big)]
    );
    let config = bytes::Bytes::from_static(&[0x11, 0x88]);
    assert_eq!(
        d.codec(),
        Some(Codec::Aac {
            config,
            sample_rate: 48000,
            channels: 1
        })
    );
    let stats = d.stats();
    assert_eq!((stats.malformed_packets, stats.dropped_frames), (1, 1));
}

#[test]
fn latm_sub_frames_and_unsupported_configs() {
    let (frames, _) = run(
        &latm("cpresent=0;config=410023103fc0"),
        &[p(98, &[1, 5, 2, 6, 6], 1, 0, true, 0)],
    );
    assert_eq!(
        frames.iter().map(|f| f.data.len()).collect::<Vec<_>>(),
        [1, 2]
    );
    // The config in band; audioMuxVersion 1; two programs; no config at all.
    for fmtp in [
        "config=400023103fc0",
        "cpresent=0;config=c00023103fc0",
        "cpresent=0;config=4010",
        "cpresent=0",
    ] {
        assert!(for_track(0, &latm(fmtp)).is_err(), "{fmtp}");
    }
}

#[test]
fn g711_and_opus_are_one_frame_per_packet() {
    let mut pcmu = spec("PCMU", 0, 8000, "");
    pcmu.channels = None;
    let packets = [
        p(0, &[0xff; 160], 1, 0, false, 0),
        p(0, &[0x7f; 160], 3, 320, false, 40),
    ];
    let mut d = for_track(0, &pcmu).expect("PCMU");
    let frames = super::test_util::run_with(d.as_mut(), &packets);
    assert_eq!(
        frames
            .iter()
            .map(|f| (f.pts, f.discontinuity))
            .collect::<Vec<_>>(),
        [(Npt::ZERO, false), (Npt::from_millis(40), true)]
    );
    assert_eq!(
        d.codec(),
        Some(Codec::Pcmu {
            sample_rate: 8000,
            channels: 1
        })
    );
    let d = for_track(0, &spec("pcma", 8, 8000, "")).expect("PCMA");
    assert_eq!(
        d.codec(),
        Some(Codec::Pcma {
            sample_rate: 8000,
            channels: 1
        })
    );

    let mut opus = spec("opus", 111, 48000, "sprop-stereo=0");
    opus.channels = Some(2);
    let (frames, stats) = run(&opus, &[p(111, &[0xfc, 1, 2], 9, 0, true, 0)]);
    assert_eq!(&frames[0].data[..], &[0xfc, 1, 2]);
    assert_eq!(stats, Default::default());
    assert_eq!(
        for_track(0, &opus).expect("Opus").codec(),
        Some(Codec::Opus { channels: 1 })
    );
    opus.fmtp = None;
    assert_eq!(
        for_track(0, &opus).expect("Opus").codec(),
        Some(Codec::Opus { channels: 2 })
    );
    assert!(for_track(0, &spec("VP8", 100, 90000, "")).is_err());
}
