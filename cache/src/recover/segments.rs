//! A presentation's segment files at open: every record verified, each run
//! cut at its first damage, and what is kept sealed.
//!
//! A run plays segment after segment, and a partial fill splices a later
//! run in where an earlier one stops, so a run must hold no hole: it is cut
//! at its first damaged, missing or unreadable segment (the damaged segment
//! keeps its intact records before the damage) and its later segments are
//! dropped. The refill then records from the cut on. A later run that no
//! longer continues what plays before it, or adds nothing to it, is dropped
//! too: the refill records from the cut to the title's end, and would
//! otherwise be played twice.

use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use tracing::debug;

use super::Mode;
use crate::format::{self, FullScan, ScanStop, SegmentHeader, Trailer};
use crate::presentation::segment_name;
use crate::segment::{Segment, SegmentInit};
use crate::{CacheError, NptSpan};
use streamcache_types::HELD_SLACK;

/// A segment file as found on disk.
pub struct Found {
    pub path: PathBuf,
    pub run: u32,
    pub seq: u32,
    pub outcome: Result<Inspected, CacheError>,
}

/// A readable segment: its header, its trailer if sealed, its records.
pub struct Inspected {
    header: SegmentHeader,
    /// The trailer, if the file ends with a valid one.
    trailer: Option<Trailer>,
    /// The records area: up to the trailer if sealed, else to the end of
    /// the file (zero bytes or a trailer end it there).
    pub scan: FullScan,
}

/// Reads and verifies one segment file. `(run, seq)` from its name, or
/// from its header if the name does not say.
pub fn inspect(path: &Path, name_ids: Option<(u32, u32)>, mode: Mode) -> Option<Found> {
    let outcome = read(path, mode).and_then(|bytes| inspect_bytes(path, &bytes));
    let (run, seq) = match (&outcome, name_ids) {
        (_, Some(ids)) => ids,
        (Ok(i), None) => (i.header.run, i.header.seq),
        (Err(_), None) => return None,
    };
    Some(Found {
        path: path.to_path_buf(),
        run,
        seq,
        outcome,
    })
}

/// The bytes of a segment file.
fn read(path: &Path, mode: Mode) -> Result<Bytes, CacheError> {
    let mut file = File::open(path).map_err(|e| CacheError::io(path, e))?;
    match mode {
        // SAFETY: in repair mode the store holds the directory lock, so
        // nothing else writes or trims the file while it is mapped.
        Mode::Repair => unsafe { Mmap::map(&file) }
            .map(Bytes::Map)
            .map_err(|e| CacheError::io(path, e)),
        Mode::ReadOnly => {
            // The daemon may seal this segment meanwhile, trimming the file
            // to its used length: a mapping of the preallocated size would
            // then fault (SIGBUS) past the new end. A read can only come up
            // short, which the scan treats like a torn tail.
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| CacheError::io(path, e))?;
            Ok(Bytes::Owned(bytes))
        }
    }
}

enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<Inspected, CacheError> {
    let header = SegmentHeader::decode(path, bytes)?;
    let start = u64::from(header.header_len);
    let trailer = Trailer::decode_tail(bytes).filter(|t| t.records_end >= start);
    let scan = match &trailer {
        Some(t) => format::scan_full(bytes, start, t.records_end, false),
        None => format::scan_full(bytes, start, bytes.len() as u64, true),
    };
    Ok(Inspected {
        header,
        trailer,
        scan,
    })
}

/// What becomes of one segment.
enum Fate {
    /// Kept: its verified records. `reseal`: the flags of the trailer to
    /// (re)write after them (repair mode). `live`: possibly a live writer's
    /// segment (read-only).
    Keep { reseal: Option<u32>, live: bool },
    /// Dropped by a cut (deleted in repair mode, unless `keep_file`).
    Drop { keep_file: bool },
}

/// How a run was cut.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CutKind {
    /// A record torn by a crash, nothing intact after it.
    Torn,
    /// A segment its writer never sealed (read-only: recovered at the next
    /// open).
    Unsealed,
    /// An unreadable segment (its error is reported as it is).
    Unreadable,
    /// Anything else: damage.
    Damaged,
}

/// The damage that cut a run, reported once the run's dropped segments are
/// counted.
struct RunCut {
    path: PathBuf,
    offset: u64,
    what: String,
    kept: u64,
    dropped_records: u64,
    dropped_segments: usize,
    kind: CutKind,
}

impl RunCut {
    fn into_problem(self) -> Option<CacheError> {
        let nothing_dropped = self.dropped_records == 0 && self.dropped_segments == 0;
        Some(match self.kind {
            CutKind::Unreadable if nothing_dropped => return None,
            CutKind::Torn if nothing_dropped => CacheError::Recovered {
                path: self.path,
                offset: self.offset,
                kept_records: self.kept,
            },
            CutKind::Unsealed if nothing_dropped => {
                CacheError::corrupt(self.path, self.offset, self.what)
            }
            _ => CacheError::Damaged {
                path: self.path,
                offset: self.offset,
                what: self.what,
                kept_records: self.kept,
                dropped_records: self.dropped_records,
                dropped_segments: self.dropped_segments,
            },
        })
    }
}

/// Decides, applies (repair mode) and registers what is kept of a
/// presentation's segments; returns the segments to play. `maybe_live`:
/// read-only, a writer may be appending to the last segment of a run.
pub fn settle(
    dir: &Path,
    mut found: Vec<Found>,
    mode: Mode,
    maybe_live: bool,
    problems: &mut Vec<CacheError>,
) -> Vec<Arc<Segment>> {
    found.sort_by_key(|f| (f.run, f.seq));
    let mut fates = Vec::with_capacity(found.len());
    // Runs that were cut.
    let mut cut_runs = Vec::new();
    let mut i = 0;
    while i < found.len() {
        let run = found[i].run;
        let end = i + found[i..].iter().take_while(|f| f.run == run).count();
        let live = maybe_live && mode == Mode::ReadOnly;
        if plan_run(dir, &mut found[i..end], &mut fates, mode, live, problems) {
            cut_runs.push(run);
        }
        i = end;
    }
    drop_runs_that_no_longer_continue(dir, &found, &mut fates, &cut_runs, problems);
    let mut kept = Vec::new();
    for (f, fate) in found.into_iter().zip(fates) {
        match (fate, f.outcome) {
            (Fate::Keep { reseal, live }, Ok(inspected)) => {
                match keep(&f.path, inspected, reseal, live, mode) {
                    Ok(Some(segment)) => kept.push(segment),
                    Ok(None) => {}
                    Err(e) => problems.push(e),
                }
            }
            (Fate::Drop { keep_file: false }, _) if mode == Mode::Repair => {
                if let Err(e) = fs::remove_file(&f.path) {
                    problems.push(CacheError::io(&f.path, e));
                }
            }
            _ => {}
        }
    }
    kept
}

/// Plans one run's segments (sorted by sequence number): kept up to the
/// first damage, dropped after it. Returns whether the run was cut.
fn plan_run(
    dir: &Path,
    run: &mut [Found],
    fates: &mut Vec<Fate>,
    mode: Mode,
    maybe_live: bool,
    problems: &mut Vec<CacheError>,
) -> bool {
    let mut cut: Option<RunCut> = None;
    let last = run.len().saturating_sub(1);
    for (n, f) in run.iter_mut().enumerate() {
        if cut.is_none() && f.seq != n as u32 {
            // A segment is missing: this one and the rest follow a hole.
            cut = Some(RunCut {
                path: dir.join(segment_name(f.run, n as u32)),
                offset: 0,
                what: "segment missing".into(),
                kept: 0,
                dropped_records: 0,
                dropped_segments: 0,
                kind: CutKind::Damaged,
            });
        }
        if let Some(c) = cut.as_mut() {
            c.dropped_segments += 1;
            if let Ok(i) = &f.outcome {
                c.dropped_records += i.scan.prefix.record_count + i.scan.intact_after;
            }
            let keep_file = matches!(f.outcome, Err(CacheError::UnsupportedVersion { .. }));
            fates.push(Fate::Drop { keep_file });
            continue;
        }
        let Ok(inspected) = &f.outcome else {
            // Unreadable: reported as it is, and the run ends before it.
            let keep_file = matches!(f.outcome, Err(CacheError::UnsupportedVersion { .. }));
            let reported = CacheError::corrupt(&f.path, 0, "reported");
            if let Err(e) = std::mem::replace(&mut f.outcome, Err(reported)) {
                problems.push(e);
            }
            cut = Some(RunCut {
                path: f.path.clone(),
                offset: 0,
                what: "unreadable segment".into(),
                kept: 0,
                dropped_records: 0,
                dropped_segments: 0,
                kind: CutKind::Unreadable,
            });
            fates.push(Fate::Drop { keep_file });
            continue;
        };
        let (fate, damage) = plan_segment(inspected, n == last, mode, maybe_live);
        if let Some((offset, what, kind)) = damage {
            debug!(path = %f.path.display(), offset, what, "cutting segment");
            cut = Some(RunCut {
                path: f.path.clone(),
                offset,
                what,
                kept: inspected.scan.prefix.record_count,
                dropped_records: inspected.scan.intact_after,
                dropped_segments: 0,
                kind,
            });
        }
        fates.push(fate);
    }
    let was_cut = cut.is_some();
    problems.extend(cut.and_then(RunCut::into_problem));
    was_cut
}

/// What becomes of one readable segment, and the damage that cuts its run
/// there.
fn plan_segment(
    inspected: &Inspected,
    last_of_run: bool,
    mode: Mode,
    maybe_live: bool,
) -> (Fate, Option<(u64, String, CutKind)>) {
    let scan = &inspected.scan;
    let prefix = &scan.prefix;
    let recovered = format::TRAILER_FINAL | format::TRAILER_RECOVERED;
    let damage = scan.damage.first().map(|d| (d.offset, d.what.to_string()));
    if let Some(trailer) = &inspected.trailer {
        let agrees = trailer.record_count == prefix.record_count
            && trailer.min_ns == prefix.min_ns
            && trailer.max_ns == prefix.max_ns
            && trailer.index == prefix.index;
        let reseal = (damage.is_some() || !agrees).then_some(recovered);
        let fate = Fate::Keep {
            reseal,
            live: false,
        };
        return (fate, damage.map(|(o, w)| (o, w, CutKind::Damaged)));
    }
    // Sealed but not trimmed to its trailer (a crash while sealing): its
    // flags stay.
    let reseal = Some(match &prefix.stop {
        ScanStop::Trailer(t) => t.flags,
        _ => recovered,
    });
    // Read-only, the last segment of a run may be a live writer's: a torn
    // tail is then a record being written, not a problem.
    let live = maybe_live && last_of_run && scan.intact_after == 0;
    let fate = Fate::Keep { reseal, live };
    if live {
        return (fate, None);
    }
    let cut = match damage {
        Some((offset, what)) if scan.intact_after == 0 => Some((offset, what, CutKind::Torn)),
        Some((offset, what)) => Some((offset, what, CutKind::Damaged)),
        // A writer seals a segment before it starts the next one.
        None if !last_of_run => Some((
            prefix.records_end,
            "segment not sealed, yet later segments of its run follow".into(),
            CutKind::Damaged,
        )),
        None if mode == Mode::ReadOnly => Some((
            prefix.records_end,
            "segment not sealed: its writer stopped without sealing it (recovered at the next open)"
                .into(),
            CutKind::Unsealed,
        )),
        None => None,
    };
    (fate, cut)
}

/// After a cut, drops each later run (in play order) that no longer
/// continues what plays before it, or adds nothing to it.
fn drop_runs_that_no_longer_continue(
    dir: &Path,
    found: &[Found],
    fates: &mut [Fate],
    cut_runs: &[u32],
    problems: &mut Vec<CacheError>,
) {
    if cut_runs.is_empty() {
        return;
    }
    // Per run: play order key, kept span, indexes into `found`.
    let mut runs: Vec<(u64, u32, Option<NptSpan>, Vec<usize>)> = Vec::new();
    for (i, (f, fate)) in found.iter().zip(fates.iter()).enumerate() {
        let span = match (fate, &f.outcome) {
            (Fate::Keep { .. }, Ok(inspected)) => span_of(&inspected.scan),
            _ => None,
        };
        let start = f
            .outcome
            .as_ref()
            .map_or(u64::MAX, |i| i.header.run_start_ns);
        match runs.iter_mut().find(|r| r.1 == f.run) {
            Some(r) => {
                r.0 = r.0.min(start);
                r.2 = union(r.2, span);
                r.3.push(i);
            }
            None => runs.push((start, f.run, span, vec![i])),
        }
    }
    runs.sort_by_key(|r| (r.0, r.1));
    let mut reach: Option<u64> = None;
    let mut after_cut = false;
    for (_, run, span, members) in runs {
        if after_cut {
            let slack = HELD_SLACK.as_ns();
            let continues = match (span, reach) {
                (Some(s), Some(reach)) => {
                    s.start.as_ns() <= reach.saturating_add(slack)
                        && s.end.as_ns() > reach.saturating_add(slack)
                }
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !continues {
                if span.is_some() {
                    problems.push(CacheError::corrupt(
                        dir.join(segment_name(run, 0)),
                        0,
                        format!("recording run {run} dropped: after a cut earlier in play order it no longer continues what plays before it; to be refetched"),
                    ));
                }
                for i in members {
                    if let Fate::Keep { .. } = fates[i] {
                        fates[i] = Fate::Drop { keep_file: false };
                    }
                }
                continue;
            }
        }
        if let Some(s) = span {
            reach = Some(reach.map_or(s.end.as_ns(), |r| r.max(s.end.as_ns())));
        }
        after_cut |= cut_runs.contains(&run);
    }
}

fn span_of(scan: &FullScan) -> Option<NptSpan> {
    (scan.prefix.record_count > 0).then(|| NptSpan {
        start: crate::Npt::from_ns(scan.prefix.min_ns),
        end: crate::Npt::from_ns(scan.prefix.max_ns),
    })
}

fn union(a: Option<NptSpan>, b: Option<NptSpan>) -> Option<NptSpan> {
    match (a, b) {
        (Some(a), Some(b)) => Some(NptSpan {
            start: a.start.min(b.start),
            end: a.end.max(b.end),
        }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Registers a kept segment, sealing it after its verified records first
/// (repair mode) if it needs a new trailer. `None` (and the file removed in
/// repair mode) if it keeps no record.
fn keep(
    path: &Path,
    inspected: Inspected,
    reseal: Option<u32>,
    live: bool,
    mode: Mode,
) -> Result<Option<Arc<Segment>>, CacheError> {
    let prefix = inspected.scan.prefix;
    if prefix.record_count == 0 && !live {
        if mode == Mode::Repair {
            fs::remove_file(path).map_err(|e| CacheError::io(path, e))?;
        }
        return Ok(None);
    }
    if let (Some(flags), Mode::Repair) = (reseal, mode) {
        let trailer = Trailer {
            records_end: prefix.records_end,
            record_count: prefix.record_count,
            min_ns: prefix.min_ns,
            max_ns: prefix.max_ns,
            flags,
            index: prefix.index.clone(),
        };
        seal(path, &trailer)?;
    }
    Ok(Some(Segment::new(SegmentInit {
        path: path.to_path_buf(),
        header: inspected.header,
        committed: prefix.records_end,
        sealed: !live,
        records: prefix.record_count,
        min_ns: prefix.min_ns,
        max_ns: prefix.max_ns,
        index: prefix.index,
    })))
}

/// Writes `trailer` after the kept records and cuts the file after it.
fn seal(path: &Path, trailer: &Trailer) -> Result<(), CacheError> {
    let io = |e| CacheError::io(path, e);
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    let bytes = trailer.to_bytes();
    file.write_all_at(&bytes, trailer.records_end).map_err(io)?;
    file.set_len(trailer.records_end + bytes.len() as u64)
        .map_err(io)?;
    file.sync_data().map_err(io)
}
