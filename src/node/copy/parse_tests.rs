use streamcache_cache::format::{encode_record, record_len, SegmentHeader, Trailer, TRAILER_FINAL};

use bytes::Bytes;

use super::*;

/// Record `i`: 40 ms apart, video (track 0) and audio (track 1) in turn,
/// a random-access point every tenth.
fn record(i: u64) -> (RecordFlags, u64, Vec<u8>) {
    let flags = RecordFlags {
        random_access: i.is_multiple_of(10),
        discontinuity: false,
    };
    let payload = (0..50 + i % 7).map(|b| (b * 31 + i) as u8).collect();
    (flags, i * 40_000_000, payload)
}

/// A sealed segment of `n` records, and each record's offset.
fn segment(n: u64) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = SegmentHeader::new(1, 0, 0, 0, 0).encode().to_vec();
    let mut offsets = Vec::new();
    for i in 0..n {
        let (flags, npt, payload) = record(i);
        let rec = RecordIn {
            track: (i % 2) as u8,
            kind: RecordKind::Rtp,
            flags,
            media_time: Npt::from_ns(npt),
            payload: &payload,
        };
        let mut out = vec![0; record_len(payload.len())];
        encode_record(&rec, &mut out);
        offsets.push(bytes.len() as u64);
        bytes.extend_from_slice(&out);
    }
    let trailer = Trailer {
        records_end: bytes.len() as u64,
        record_count: n,
        flags: TRAILER_FINAL,
        ..Trailer::default()
    };
    bytes.extend_from_slice(&trailer.to_bytes());
    (bytes, offsets)
}

fn feed_all(
    parse: &mut SegmentParse,
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<Received>, Corrupt> {
    let mut out = Vec::new();
    let from = parse.next_offset() as usize;
    for piece in bytes[from..].chunks(chunk) {
        out.extend(parse.feed(piece, "seg")?);
    }
    Ok(out)
}

#[test]
fn chunks_of_any_size_give_every_record_and_the_digest_checks() {
    let (bytes, _) = segment(40);
    let digest = crc32c::crc32c(&bytes);
    for chunk in [1, 7, 64, 1000, bytes.len()] {
        let mut parse = SegmentParse::new(0);
        let records = feed_all(&mut parse, &bytes, chunk).expect("verifies");
        assert_eq!(records.len(), 40, "chunk {chunk}");
        for (i, r) in records.iter().enumerate() {
            let (flags, npt, payload) = record(i as u64);
            assert_eq!((r.flags, r.media_time.as_ns()), (flags, npt));
            assert_eq!(&r.payload[..], &payload[..]);
        }
        parse.finish("seg", Some(digest)).expect("digest matches");
        assert!(parse.finish("seg", Some(digest ^ 1)).is_err());
    }
}

#[test]
fn a_cut_resumes_at_the_last_verified_record() {
    let (bytes, offsets) = segment(30);
    let mut parse = SegmentParse::new(0);
    // 1000 bytes arrive, then the connection is cut.
    let mut records = parse.feed(&bytes[..1000], "seg").expect("verifies");
    let resume = parse.rewind();
    assert!(resume <= 1000);
    assert!(offsets.contains(&resume), "a record boundary");
    assert_eq!(resume, offsets[records.len()]);
    records.extend(feed_all(&mut parse, &bytes, 333).expect("verifies"));
    assert_eq!(records.len(), 30);
    parse
        .finish("seg", Some(crc32c::crc32c(&bytes)))
        .expect("digest still whole");
}

#[test]
fn a_read_from_a_record_boundary_takes_no_header() {
    let (bytes, offsets) = segment(20);
    let mut parse = SegmentParse::new(offsets[10]);
    let records = feed_all(&mut parse, &bytes, 100).expect("verifies");
    assert_eq!(records.len(), 10);
    assert_eq!(records[0].media_time.as_ns(), 10 * 40_000_000);
    // No digest can be checked on a part.
    parse
        .finish("seg", Some(0))
        .expect("part: record checksums only");
}

#[test]
fn a_flipped_byte_is_a_checksum_failure() {
    let (mut bytes, offsets) = segment(20);
    bytes[offsets[5] as usize + 25] ^= 0x10;
    let mut parse = SegmentParse::new(0);
    let err = feed_all(&mut parse, &bytes, 64).expect_err("damage");
    assert!(err.contains("checksum"), "{err}");
    // The records before it verified; the resume point is before it.
    assert_eq!(parse.rewind(), offsets[5]);
}

#[test]
fn a_segment_ending_inside_a_record_is_refused() {
    let (bytes, offsets) = segment(5);
    let mut parse = SegmentParse::new(0);
    parse
        .feed(&bytes[..offsets[3] as usize + 10], "seg")
        .expect("so far");
    assert!(parse.finish("seg", None).is_err());
}

/// Which of 100 records (in play order) a span takes.
fn taken(start: u64, end: Option<u64>) -> Vec<u64> {
    let mut filter = SpanFilter::new(start, end, 0);
    (0..100)
        .filter(|&i| {
            let (flags, npt, _) = record(i);
            filter.admit(flags, npt)
        })
        .collect()
}

#[test]
fn spans_that_meet_split_the_title_at_one_random_access_record() {
    let s = 40_000_000;
    for boundary in [1, 9, 10, 11, 37, 50, 99] {
        let first = taken(0, Some(boundary * s));
        let second = taken(boundary * s, None);
        let mut both = first.clone();
        both.extend(&second);
        assert_eq!(both, (0..100).collect::<Vec<_>>(), "boundary {boundary}");
        // Past the last random-access record the second part is empty.
        if let Some(&first_of_second) = second.first() {
            let (flags, _, _) = record(first_of_second);
            assert!(
                flags.random_access,
                "the second part starts where a player can"
            );
        }
    }
    // Three parts.
    let mut all = taken(0, Some(20 * s));
    all.extend(taken(20 * s, Some(60 * s)));
    all.extend(taken(60 * s, None));
    assert_eq!(all, (0..100).collect::<Vec<_>>());
}

/// A sealed, final 5000-byte segment as a source lists it: `records`
/// records from npt 0 to `last_ns`, with this index ([npt, offset]).
fn listed(records: u64, last_ns: u64, index: Vec<[u64; 2]>) -> Segment {
    Segment {
        name: "s".into(),
        run: 1,
        seq: 0,
        run_start_ns: 0,
        header_len: 64,
        records_end: 5000,
        bytes: 5000,
        sealed: true,
        is_final: true,
        records,
        first_ns: Some(0),
        last_ns: Some(last_ns),
        index,
    }
}

#[test]
fn reading_starts_at_the_index_entry_before_the_span_and_stops_at_its_end() {
    let s = listed(50, 1000, vec![[0, 64], [400, 1000], [800, 2000]]);
    let later = SpanFilter::new(500, Some(900), 0);
    assert_eq!(later.start_offset(&s), Some(1000));
    assert_eq!(later.read_limit(&s), None, "no entry at or after 900");
    let early = SpanFilter::new(0, Some(800), 0);
    assert_eq!(early.start_offset(&s), Some(0));
    assert_eq!(early.read_limit(&s), Some(2000));
    let after = SpanFilter::new(2000, None, 0);
    assert_eq!(after.start_offset(&s), None, "wholly before the span");
}

/// Frames 0..60, 40 ms apart, a keyframe every tenth: video (track 0) in
/// three RTP packets per frame sharing its npt, audio (track 1) one packet
/// 5 ms later. As two sources recorded them: each numbers its packets its
/// own way (`seq_base`), and the audio comes before or after the video.
fn recorded(seq_base: u16, audio_first: bool) -> Vec<Received> {
    let step = 40_000_000;
    let rtp = |seq: u16, body: &[u8]| {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&[0; 8]);
        packet.extend_from_slice(body);
        Bytes::from(packet)
    };
    let mut seq = seq_base;
    let mut out = Vec::new();
    for i in 0..60u64 {
        let audio = Received {
            track: 1,
            kind: RecordKind::Rtp,
            flags: RecordFlags::default(),
            media_time: Npt::from_ns(i * step + 5_000_000),
            payload: rtp(seq, &[1, i as u8]),
        };
        seq = seq.wrapping_add(1);
        if audio_first {
            out.push(audio.clone());
        }
        for k in 0..3u8 {
            out.push(Received {
                track: 0,
                kind: RecordKind::Rtp,
                flags: RecordFlags {
                    random_access: k == 0 && i % 10 == 0,
                    discontinuity: false,
                },
                media_time: Npt::from_ns(i * step),
                payload: rtp(seq, &[0, i as u8, k, 0xee]),
            });
            seq = seq.wrapping_add(1);
        }
        if !audio_first {
            out.push(audio);
        }
    }
    out
}

/// What a track's records carry past the RTP header, in order.
fn bodies(records: &[Received], track: u8) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.track == track)
        .map(|r| r.payload[12..].to_vec())
        .collect()
}

/// The bug this mends (tests/cluster_copy_faults.rs): a copy of [0, 40)
/// from A stopped in the middle of frame 27 (two of its three packets
/// stored), and its rest was copied from C from the first keyframe at or
/// after where it stopped (frame 30), so frames 27 to 29 were lost. The
/// resumed copy continues each track exactly after what was stored: the
/// rest of frame 27, nothing of it twice, though C numbers its packets
/// otherwise and interleaves its tracks otherwise; and it still ends at the
/// first keyframe at or after the span's end.
#[test]
fn a_resumed_copy_continues_after_the_last_stored_packet_of_each_track() {
    let step = 40_000_000;
    let a = recorded(1000, false);
    let c = recorded(40_000, true);
    let cut = a
        .iter()
        .position(|r| r.track == 0 && r.media_time.as_ns() == 27 * step && r.payload[14] == 1)
        .expect("frame 27's second packet");
    let stored = &a[..=cut];
    let mut tail = Tail::default();
    for record in stored {
        tail.stored(record);
    }
    tail.held_to_ns = 27 * step;

    let mut filter = SpanFilter::resume(&tail, Some(40 * step));
    let rest: Vec<Received> = c
        .iter()
        .filter(|r| filter.admit_record(r))
        .cloned()
        .collect();
    assert!(filter.ended());
    let video = rest.iter().find(|r| r.track == 0).expect("video");
    assert_eq!(
        (video.media_time.as_ns(), video.payload[14]),
        (27 * step, 2),
        "frame 27's last packet first"
    );
    // The span ends at C's keyframe of frame 40 (C's audio of frame 40,
    // before it, is in).
    let whole: Vec<Received> = c
        .iter()
        .take_while(|r| !(r.flags.random_access && r.media_time.as_ns() >= 40 * step))
        .cloned()
        .collect();
    for track in [0, 1] {
        let mut copied = bodies(stored, track);
        copied.extend(bodies(&rest, track));
        assert_eq!(copied, bodies(&whole, track), "track {track}");
    }
    // Reading starts at the index entry at or before the earliest track's
    // last stored record (here the audio of frame 26).
    let s = listed(
        240,
        59 * step,
        vec![
            [0, 64],
            [10 * step, 1000],
            [20 * step, 2000],
            [30 * step, 3000],
        ],
    );
    assert_eq!(
        SpanFilter::resume(&tail, Some(40 * step)).start_offset(&s),
        Some(2000)
    );

    // A source whose packets never match what was stored (the stored
    // record unknown to it): each track is taken from its first packet
    // clearly after the stored one, the next keyframe for the video.
    let mut other = tail.clone();
    for (_, payload) in other.tracks.iter_mut().flatten() {
        *payload = Bytes::from_static(b"never sent");
    }
    let mut filter = SpanFilter::resume(&other, None);
    let rest: Vec<Received> = c
        .iter()
        .filter(|r| filter.admit_record(r))
        .cloned()
        .collect();
    let first = |track: u8| {
        rest.iter()
            .find(|r| r.track == track)
            .map(|r| r.media_time.as_ns())
    };
    assert_eq!(first(0), Some(30 * step));
    // The audio stored last was frame 26's: from 0.5 s after it.
    assert_eq!(first(1), Some(39 * step + 5_000_000));
}
