//! Format tests: header checks, and properties of the record encoding under
//! round trips, truncation and byte flips.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    track: u8,
    kind: RecordKind,
    flags: RecordFlags,
    media_time_ns: u64,
    payload: Vec<u8>,
}

impl Owned {
    fn input(&self) -> RecordIn<'_> {
        RecordIn {
            track: self.track,
            kind: self.kind,
            flags: self.flags,
            media_time: Npt::from_ns(self.media_time_ns),
            payload: &self.payload,
        }
    }

    fn matches(&self, rec: &Record) -> bool {
        rec.as_input() == self.input()
    }
}

fn records() -> impl Strategy<Value = Vec<Owned>> {
    let record = (
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u64..10_000_000_000,
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(track, rtcp, random_access, discontinuity, media_time_ns, payload)| Owned {
                track,
                kind: if rtcp {
                    RecordKind::Rtcp
                } else {
                    RecordKind::Rtp
                },
                flags: RecordFlags {
                    random_access,
                    discontinuity,
                },
                media_time_ns,
                payload,
            },
        );
    proptest::collection::vec(record, 0..20)
}

/// A segment as the writer leaves it: header, records, and (if `sealed`) the
/// trailer. Returns the bytes and each record's end offset.
fn segment(records: &[Owned], sealed: bool) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = SegmentHeader::new(3, 7, 42, 1, 1 << 20).encode().to_vec();
    let mut ends = Vec::new();
    let mut index = IndexBuilder::default();
    for r in records {
        let at = bytes.len();
        bytes.resize(at + record_len(r.payload.len()), 0);
        encode_record(&r.input(), &mut bytes[at..]);
        index.observe(r.flags, r.media_time_ns, at as u64);
        ends.push(bytes.len() as u64);
    }
    if sealed {
        let trailer = Trailer {
            records_end: bytes.len() as u64,
            record_count: records.len() as u64,
            min_ns: records.iter().map(|r| r.media_time_ns).min().unwrap_or(0),
            max_ns: records.iter().map(|r| r.media_time_ns).max().unwrap_or(0),
            flags: TRAILER_FINAL,
            index: index.into_entries(),
        };
        bytes.extend_from_slice(&trailer.to_bytes());
    }
    (bytes, ends)
}

/// The records a reader would be given: those before the first bad one.
fn served<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<Record<'a>>, CacheError> {
    let (header, inspected) = inspect_segment(path, bytes)?;
    let end = match inspected {
        Inspected::Sealed(t) => t.records_end,
        Inspected::Unsealed(scan) => scan.records_end,
    };
    let mut out = Vec::new();
    let mut at = u64::from(header.header_len);
    while at < end {
        let Ok((rec, next)) = decode_record(bytes, at, end) else {
            break;
        };
        out.push(rec);
        at = next;
    }
    Ok(out)
}

#[test]
fn header_round_trips() {
    let header = SegmentHeader::new(1, 2, 3, 4, 5);
    assert_eq!(
        SegmentHeader::decode(Path::new("s"), &header.encode()).unwrap(),
        header
    );
}

#[test]
fn bad_magic_is_refused_at_offset_0() {
    let mut bytes = SegmentHeader::new(1, 2, 3, 4, 5).encode();
    bytes[0] ^= 1;
    let err = SegmentHeader::decode(Path::new("/c/x.seg"), &bytes).unwrap_err();
    assert!(
        matches!(err, CacheError::Corrupt { offset: 0, .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("/c/x.seg: at offset 0:"),
        "{err}"
    );
}

#[test]
fn unknown_major_version_is_refused_naming_file_and_version() {
    let mut header = SegmentHeader::new(1, 2, 3, 4, 5);
    header.major = 2;
    header.minor = 5;
    let err = SegmentHeader::decode(Path::new("/c/x.seg"), &header.encode()).unwrap_err();
    assert!(matches!(
        err,
        CacheError::UnsupportedVersion {
            major: 2,
            minor: 5,
            ..
        }
    ));
    let message = err.to_string();
    assert!(
        message.contains("/c/x.seg") && message.contains("2.5"),
        "{message}"
    );
}

#[test]
fn header_checksum_is_checked() {
    let mut bytes = SegmentHeader::new(1, 2, 3, 4, 5).encode();
    bytes[20] ^= 0x10;
    let err = SegmentHeader::decode(Path::new("s"), &bytes).unwrap_err();
    assert!(
        matches!(err, CacheError::Corrupt { offset: 60, .. }),
        "{err}"
    );
}

#[test]
fn zero_bytes_are_never_a_record() {
    // FORMAT.md relies on it: all-zero header bytes mean "no more records".
    assert_ne!(crc32c::crc32c(&[0; 16]), 0);
    assert_eq!(decode_record(&[0; 64], 0, 64).unwrap_err(), Stop::Zeroed);
}

#[test]
fn index_is_sparse_and_increasing() {
    let ra = RecordFlags {
        random_access: true,
        discontinuity: false,
    };
    let mut index = IndexBuilder::default();
    for (i, t) in [0, 50_000_000, 100_000_000, 90_000_000, 250_000_000]
        .into_iter()
        .enumerate()
    {
        index.observe(ra, t, i as u64 * 100);
    }
    index.observe(RecordFlags::default(), 900_000_000, 900);
    let times: Vec<_> = index.entries().iter().map(|e| e.media_time_ns).collect();
    assert_eq!(times, [0, 100_000_000, 250_000_000]);
}

proptest! {
    // Each case checks every cut of a segment: fewer cases suffice.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Cut anywhere, a segment yields exactly the records wholly before the cut.
    #[test]
    fn truncation_keeps_exactly_the_whole_records(records in records(), sealed in any::<bool>()) {
        let (bytes, ends) = segment(&records, sealed);
        for cut in 0..=bytes.len() {
            let got = served(Path::new("s"), &bytes[..cut]);
            if cut < HEADER_LEN {
                prop_assert!(got.is_err());
                continue;
            }
            let got = got.unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            prop_assert_eq!(got.len(), whole, "cut at {}", cut);
            for (rec, want) in got.iter().zip(&records) {
                prop_assert!(want.matches(rec));
            }
        }
    }

    /// A torn write into a preallocated (zero-filled) file: the records before
    /// the tear are kept, and the torn one only if its missing bytes were zero
    /// anyway (then it is intact).
    #[test]
    fn torn_write_into_zeroes_keeps_the_prefix(records in records()) {
        let (bytes, ends) = segment(&records, false);
        for cut in HEADER_LEN..=bytes.len() {
            let mut torn = bytes[..cut].to_vec();
            torn.resize(bytes.len() + 64, 0);
            let got = served(Path::new("s"), &torn).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            let intact = |k: usize| bytes[cut..ends[k] as usize].iter().all(|&b| b == 0);
            prop_assert!(got.len() == whole || (got.len() == whole + 1 && intact(whole)), "cut at {}", cut);
            for (rec, want) in got.iter().zip(&records) {
                prop_assert!(want.matches(rec));
            }
        }
    }
}

proptest! {
    #[test]
    fn records_round_trip(records in records(), sealed in any::<bool>()) {
        let (mut bytes, _) = segment(&records, sealed);
        if !sealed {
            // As left in a preallocated file.
            bytes.resize(bytes.len() + 4096, 0);
        }
        let got = served(Path::new("s"), &bytes).unwrap();
        prop_assert_eq!(got.len(), records.len());
        for (rec, want) in got.iter().zip(&records) {
            prop_assert!(want.matches(rec));
        }
        let (_, inspected) = inspect_segment(Path::new("s"), &bytes).unwrap();
        prop_assert_eq!(matches!(inspected, Inspected::Sealed(_)), sealed);
    }

    /// A flipped byte is always detected: nothing from the damaged record on
    /// is served, and what is served is intact.
    #[test]
    fn byte_flips_are_never_served(records in records(), sealed in any::<bool>(), at in any::<prop::sample::Index>(), mask in 1u8..) {
        let (mut bytes, ends) = segment(&records, sealed);
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let got = served(Path::new("s"), &bytes);
        if at < HEADER_LEN {
            prop_assert!(got.is_err());
            return Ok(());
        }
        let got = got.unwrap();
        // Records wholly before the flipped byte are kept; a flip in the
        // trailer loses no record.
        let before = ends.iter().filter(|&&e| e <= at as u64).count();
        prop_assert_eq!(got.len(), before);
        for (rec, want) in got.iter().zip(&records) {
            prop_assert!(want.matches(rec));
        }
    }

    /// Any number of flips: whatever is served is intact.
    #[test]
    fn many_flips_serve_only_intact_records(records in records(), flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..8)) {
        let (mut bytes, _) = segment(&records, true);
        for (at, mask) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        if let Ok(got) = served(Path::new("s"), &bytes) {
            prop_assert!(got.len() <= records.len());
            for (rec, want) in got.iter().zip(&records) {
                prop_assert!(want.matches(rec));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = served(Path::new("s"), &bytes);
        let _ = scan_records(&bytes, 0, bytes.len() as u64);
        let _ = Trailer::decode_tail(&bytes);
    }
}

#[test]
fn a_damaged_length_field_loses_only_its_record() {
    let records: Vec<Owned> = (0..10u64)
        .map(|i| Owned {
            track: 0,
            kind: RecordKind::Rtp,
            flags: RecordFlags::default(),
            media_time_ns: i,
            payload: vec![i as u8; 100],
        })
        .collect();
    let (mut bytes, ends) = segment(&records, true);
    let trailer = Trailer::decode_tail(&bytes).unwrap();
    // Record 3's length now says 64 KiB more: without resynchronising, the rest
    // of the segment would be lost.
    let at = ends[2] as usize;
    bytes[at + 2] = 0x01;
    let full = scan_full(&bytes, HEADER_LEN as u64, trailer.records_end, false);
    assert_eq!(full.prefix.record_count, 3);
    assert_eq!(full.prefix.records_end, ends[2]);
    assert_eq!(
        full.damage,
        [Damage {
            offset: ends[2],
            what: "record runs past the end of the data",
            resumed: Some(ends[3]),
        }]
    );
    assert_eq!(full.intact_after, 6);
    assert_eq!(resync(&bytes, ends[2], trailer.records_end), Some(ends[3]));
}

#[test]
fn zeros_end_an_unsealed_segment_but_are_damage_in_a_sealed_one() {
    let records: Vec<Owned> = (0..4u64)
        .map(|i| Owned {
            track: 1,
            kind: RecordKind::Rtcp,
            flags: RecordFlags::default(),
            media_time_ns: i,
            payload: vec![7; 40],
        })
        .collect();
    let (mut bytes, ends) = segment(&records, false);
    bytes.resize(bytes.len() + 4096, 0);
    let unsealed = scan_full(&bytes, HEADER_LEN as u64, bytes.len() as u64, true);
    assert!(unsealed.damage.is_empty() && unsealed.prefix.record_count == 4);
    assert_eq!(unsealed.prefix.max_track, 1);
    // Zero the second record: in a records area that must be whole.
    bytes[ends[0] as usize..ends[1] as usize].fill(0);
    let sealed = scan_full(&bytes, HEADER_LEN as u64, ends[3], false);
    assert_eq!(sealed.prefix.record_count, 1);
    assert_eq!(sealed.damage.len(), 1);
    assert_eq!(sealed.damage[0].resumed, Some(ends[1]));
    assert_eq!(sealed.intact_after, 2);
}

proptest! {
    /// After any flips, a resynchronising scan never panics, every record it
    /// resumes at verifies and was written, and the damage it reports
    /// accounts for every intact record it did not count.
    #[test]
    fn resync_finds_only_written_records(records in records(), flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..6)) {
        let (mut bytes, ends) = segment(&records, true);
        let records_end = ends.last().copied().unwrap_or(HEADER_LEN as u64);
        for (at, mask) in flips {
            let at = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
            bytes[at] ^= mask;
        }
        let full = scan_full(&bytes, HEADER_LEN as u64, records_end, false);
        let starts: Vec<u64> = std::iter::once(HEADER_LEN as u64).chain(ends.iter().copied()).collect();
        let mut served = full.prefix.record_count;
        for d in &full.damage {
            let Some(at) = d.resumed else { continue };
            prop_assert!(at > d.offset);
            let mut at = at;
            while let Ok((rec, next)) = decode_record(&bytes, at, records_end) {
                // A record found by resynchronising is one that was written
                // there, or a forgery only a CRC collision could make.
                let i = starts.iter().position(|&s| s == at);
                prop_assert!(i.is_some_and(|i| i < records.len() && records[i].matches(&rec)), "at {}", at);
                served += 1;
                at = next;
            }
        }
        prop_assert_eq!(served, full.prefix.record_count + full.intact_after);
        prop_assert!(served <= records.len() as u64);
    }

    #[test]
    fn resync_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), from in 0u64..700, end in 0u64..700) {
        if let Some(at) = resync(&bytes, from, end) {
            prop_assert!(at > from && decode_record(&bytes, at, end).is_ok());
        }
        let _ = scan_full(&bytes, from, end, false);
        let _ = scan_full(&bytes, from, end, true);
    }
}
