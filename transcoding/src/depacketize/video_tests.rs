//! H.264 and H.265: hand-built packets, and properties of fragmentation.

use proptest::prelude::*;
use streamcache_types::Npt;

use super::for_track;
use super::test_util::{avcc, packet, run, spec, Stored};
use crate::frame::Codec;

const SPS: &[u8] = &[0x67, 0x4d, 0x40, 0x0c];
const PPS: &[u8] = &[0x68, 0xef, 0x3c];
const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
const SLICE: &[u8] = &[0x41, 0x9a, 0x02];

fn h264() -> super::super::TrackSpec {
    spec("h264", 96, 90000, "packetization-mode=1")
}

/// (payload, seq, ts, marker, media ms) → a stored packet of PT 96.
fn p(payload: &[u8], seq: u16, ts: u32, marker: bool, ms: u64) -> Stored {
    (packet(96, seq, ts, marker, payload), ms, false)
}

fn stap(header: u8, nals: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![header];
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

#[test]
fn h264_single_nal_units_and_in_band_parameter_sets() {
    let mut d = for_track(3, &h264()).expect("H.264");
    assert_eq!(d.codec(), None, "nothing known yet");
    let packets = [
        p(SPS, 1, 0, false, 0),
        p(PPS, 2, 0, false, 0),
        p(IDR, 3, 0, true, 0),
        p(SLICE, 4, 3600, false, 40),
        p(SLICE, 5, 7200, false, 80), // a new timestamp ends the unit before
    ];
    let frames = super::test_util::run_with(d.as_mut(), &packets);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].data, avcc(&[SPS, PPS, IDR]));
    assert!(frames[0].keyframe && !frames[0].discontinuity);
    assert_eq!((frames[0].track, frames[0].pts), (3, Npt::ZERO));
    assert_eq!(frames[1].data, avcc(&[SLICE]));
    assert!(!frames[1].keyframe);
    assert_eq!(
        frames[2].pts,
        Npt::from_millis(80),
        "the last one at finish"
    );
    assert_eq!(
        d.codec(),
        Some(Codec::H264 {
            sps: vec![SPS.into()],
            pps: vec![PPS.into()]
        })
    );
    assert_eq!(d.stats(), Default::default());
}

#[test]
fn h264_stap_a_and_fu_a() {
    let fu = |se: u8, data: &[u8]| [&[0x7c, se | 5][..], data].concat();
    let packets = [
        p(&stap(0x78, &[SPS, PPS]), 10, 90, false, 5),
        p(&fu(0x80, &IDR[1..3]), 11, 90, false, 5),
        p(&fu(0x00, &IDR[3..4]), 12, 90, false, 5),
        p(&fu(0x40, &IDR[4..]), 13, 90, true, 5),
    ];
    let (frames, stats) = run(&h264(), &packets);
    assert_eq!(frames.len(), 1);
    // The rebuilt header: F and NRI of the indicator (0x7c → 0x60), type 5.
    let idr = [&[0x65][..], &IDR[1..]].concat();
    assert_eq!(frames[0].data, avcc(&[SPS, PPS, &idr]));
    assert!(frames[0].keyframe);
    assert_eq!(frames[0].pts, Npt::from_millis(5));
    assert_eq!(stats, Default::default());
}

#[test]
fn h264_sprop_parameter_sets_and_a_changed_sps() {
    let s = spec(
        "H264",
        96,
        90000,
        "sprop-parameter-sets=Z01ADNoFBn58BEAAAAMAQAAADIPFCqg=,aO88gA==",
    );
    let mut d = for_track(0, &s).expect("H.264");
    let Some(Codec::H264 { sps, pps }) = d.codec() else {
        panic!("known from the SDP")
    };
    assert_eq!(
        (sps.len(), pps.len(), &pps[0][..]),
        (1, 1, &[0x68, 0xef, 0x3c, 0x80][..])
    );
    let frames =
        super::test_util::run_with(d.as_mut(), &[p(SPS, 1, 0, false, 0), p(IDR, 2, 0, true, 0)]);
    assert_eq!(frames.len(), 1);
    let Some(Codec::H264 { sps, pps }) = d.codec() else {
        panic!("still known")
    };
    assert_eq!(
        (&sps[..], pps.len()),
        (&[SPS.into()][..], 1),
        "the new SPS replaces the old"
    );
}

#[test]
fn h264_losses_drop_the_unit_they_hit() {
    let fu = |se: u8, data: &[u8]| [&[0x7c, se | 5][..], data].concat();
    let packets = [
        p(IDR, 1, 0, true, 0),
        p(&fu(0x80, &[1, 2]), 2, 3600, false, 40),
        // seq 3 lost: the middle of the fragmented unit
        p(&fu(0x40, &[5, 6]), 4, 3600, true, 40),
        p(SLICE, 5, 7200, true, 80),
        p(SLICE, 5, 7200, true, 80),                   // duplicate
        p(&stap(0x79, &[SLICE]), 6, 10800, true, 120), // STAP-B
        p(&[0x7c], 7, 14400, true, 160),               // FU-A without its header
        p(SLICE, 8, 18000, true, 200),
    ];
    let (frames, stats) = run(&h264(), &packets);
    let pts: Vec<_> = frames
        .iter()
        .map(|f| (f.pts.as_ns() / 1_000_000, f.discontinuity))
        .collect();
    assert_eq!(pts, [(0, false), (80, true), (200, true)]);
    assert_eq!(stats.dropped_frames, 3);
    assert_eq!(stats.reordered_packets, 1);
    assert_eq!(stats.unsupported_packets, 1);
    assert_eq!(stats.malformed_packets, 1);
}

#[test]
fn h264_a_new_run_starts_a_new_timeline_piece() {
    let mut packets = vec![p(IDR, 1, 0, true, 0), p(IDR, 500, 9000, true, 5000)];
    packets[1].2 = true;
    let (frames, stats) = run(&h264(), &packets);
    assert_eq!(
        frames.iter().map(|f| f.discontinuity).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(stats, Default::default());
}

fn h265() -> super::super::TrackSpec {
    spec("H265", 96, 90000, "sprop-max-don-diff=0")
}

const VPS5: &[u8] = &[0x40, 0x01, 0x0c];
const SPS5: &[u8] = &[0x42, 0x01, 0x01];
const PPS5: &[u8] = &[0x44, 0x01, 0xc1];
const IDR5: &[u8] = &[0x26, 0x01, 0xaf, 0x01, 0x02, 0x03];
const TRAIL5: &[u8] = &[0x02, 0x01, 0xd0];

#[test]
fn h265_aggregation_fragmentation_and_keyframes() {
    let mut ap = vec![0x60, 0x01];
    for nal in [VPS5, SPS5, PPS5] {
        ap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        ap.extend_from_slice(nal);
    }
    // FU payload header type 49, FU header S/E and type 19 (IDR_W_RADL).
    let fu = |se: u8, data: &[u8]| [&[0x62, 0x01, se | 19][..], data].concat();
    let packets = [
        p(&ap, 1, 0, false, 0),
        p(&fu(0x80, &IDR5[2..4]), 2, 0, false, 0),
        p(&fu(0x40, &IDR5[4..]), 3, 0, true, 0),
        p(TRAIL5, 4, 3600, true, 40),
    ];
    let mut d = for_track(0, &h265()).expect("H.265");
    let frames = super::test_util::run_with(d.as_mut(), &packets);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].data, avcc(&[VPS5, SPS5, PPS5, IDR5]));
    assert!(frames[0].keyframe && !frames[1].keyframe);
    assert_eq!(frames[1].data, avcc(&[TRAIL5]));
    let Some(Codec::H265 { vps, sps, pps }) = d.codec() else {
        panic!("in band")
    };
    assert_eq!((&vps[0][..], &sps[0][..], &pps[0][..]), (VPS5, SPS5, PPS5));
    assert_eq!(d.stats(), Default::default());
}

#[test]
fn h265_with_donl_is_unsupported() {
    assert!(for_track(1, &spec("H265", 96, 90000, "sprop-max-don-diff=2")).is_err());
    let sprop = "sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHB";
    let d = for_track(1, &spec("h265", 96, 90000, sprop)).expect("H.265");
    assert!(
        matches!(d.codec(), Some(Codec::H265 { .. })),
        "from the SDP"
    );
}

/// NAL units as proptest makes them: random bytes with a valid header of
/// a non-aggregating type.
fn nals(header_len: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let nal = (
        1u8..=23,
        proptest::collection::vec(any::<u8>(), header_len..1500),
    );
    proptest::collection::vec(nal, 1..5).prop_map(move |v| {
        v.into_iter()
            .map(|(kind, mut nal)| {
                if header_len == 1 {
                    nal[0] = (nal[0] & 0x60) | kind;
                } else {
                    nal[0] = (kind % 22) << 1; // types 0..=21, layer 0
                    nal[1] = 1;
                }
                nal
            })
            .collect()
    })
}

/// Packet payloads carrying `nals`: a NAL with a body of 2 bytes or more
/// goes in fragments cut at `cuts` (cycled), others whole.
fn packetize(nals: &[Vec<u8>], cuts: &[usize], header_len: usize) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut cut = cuts.iter().cycle();
    for nal in nals {
        let (header, body) = nal.split_at(header_len);
        if body.len() < 2 {
            out.push((nal.clone(), false));
            continue;
        }
        let mut pieces = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let n = (*cut.next().expect("cycle")).min(rest.len());
            // At least two pieces: a lone FU would be both start and end.
            let n = if pieces.is_empty() && n == body.len() {
                n / 2
            } else {
                n
            };
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let se = if i == 0 {
                0x80
            } else if i == last {
                0x40
            } else {
                0
            };
            let fu_head = if header_len == 1 {
                vec![(header[0] & 0xe0) | 28, se | (header[0] & 0x1f)]
            } else {
                vec![
                    (header[0] & 0x81) | (49 << 1),
                    header[1],
                    se | (header[0] >> 1),
                ]
            };
            out.push(([fu_head, piece.to_vec()].concat(), true));
        }
    }
    out
}

/// Access units of `nals`, one timestamp each, marker on the last packet.
fn stored(units: &[Vec<Vec<u8>>], cuts: &[usize], header_len: usize) -> Vec<(Stored, usize, bool)> {
    let mut out = Vec::new();
    let mut seq = 0u16;
    for (u, nals) in units.iter().enumerate() {
        let packets = packetize(nals, cuts, header_len);
        let last = packets.len() - 1;
        for (i, (payload, fragment)) in packets.into_iter().enumerate() {
            seq = seq.wrapping_add(1);
            let ts = u as u32 * 3600;
            out.push((p(&payload, seq, ts, i == last, u as u64 * 40), u, fragment));
        }
    }
    out
}

fn video_spec(header_len: usize) -> super::super::TrackSpec {
    if header_len == 1 {
        h264()
    } else {
        h265()
    }
}

proptest! {
    #[test]
    fn fragmented_access_units_come_back_whole(
        header_len in 1usize..=2,
        units in proptest::collection::vec(nals(2), 1..4),
        cuts in proptest::collection::vec(1usize..1500, 1..20),
    ) {
        let units: Vec<Vec<Vec<u8>>> = units
            .into_iter()
            .map(|nals| nals.into_iter().map(|n| fix_header(n, header_len)).collect())
            .collect();
        let packets: Vec<Stored> = stored(&units, &cuts, header_len).into_iter().map(|s| s.0).collect();
        let (frames, stats) = run(&video_spec(header_len), &packets);
        prop_assert_eq!(stats, Default::default());
        prop_assert_eq!(frames.len(), units.len());
        for (frame, nals) in frames.iter().zip(&units) {
            let nals: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(&frame.data[..], &avcc(&nals)[..]);
        }
    }

    #[test]
    fn a_gap_inside_a_fragmented_unit_drops_exactly_that_unit(
        header_len in 1usize..=2,
        units in proptest::collection::vec(nals(2), 2..5),
        cuts in proptest::collection::vec(1usize..600, 1..20),
        pick in any::<prop::sample::Index>(),
    ) {
        let units: Vec<Vec<Vec<u8>>> = units
            .into_iter()
            .map(|nals| nals.into_iter().map(|n| fix_header(n, header_len)).collect())
            .collect();
        let all = stored(&units, &cuts, header_len);
        let fragments: Vec<usize> = (0..all.len()).filter(|&i| all[i].2).collect();
        prop_assume!(!fragments.is_empty());
        let lost = fragments[pick.index(fragments.len())];
        let hit = all[lost].1;
        let packets: Vec<Stored> =
            all.iter().enumerate().filter(|(i, _)| *i != lost).map(|(_, s)| s.0.clone()).collect();
        let (frames, stats) = run(&video_spec(header_len), &packets);
        prop_assert_eq!(stats.dropped_frames, 1);
        let kept: Vec<u64> = frames.iter().map(|f| f.pts.as_ns() / 40_000_000).collect();
        let expected: Vec<u64> = (0..units.len() as u64).filter(|&u| u != hit as u64).collect();
        prop_assert_eq!(kept, expected);
        for f in &frames {
            prop_assert_eq!(f.discontinuity, f.pts.as_ns() / 40_000_000 == hit as u64 + 1);
        }
    }
}

/// Gives a generated NAL unit the header form of its codec.
fn fix_header(mut nal: Vec<u8>, header_len: usize) -> Vec<u8> {
    if header_len == 1 {
        nal[0] = (nal[0] & 0x60) | (1 + nal[0] % 23);
    } else {
        nal[0] = (nal[0] % 22) << 1;
        nal[1] = 1;
    }
    nal
}
