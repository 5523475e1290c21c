//! A presentation in memory: its metadata, its recording runs and their
//! segments in play order, and the counters eviction looks at.
//!
//! Damage a cursor finds after open (the file changed under the mapping) is
//! recorded as a [`Cut`]: from then on the presentation is what plays before
//! it, so it reports itself partial with its spans ending there and the
//! daemon refills from that point, as [`crate::Store::open`] would after
//! cutting the run on disk. Cursors opened before the cut keep the view they
//! had (every run recorded so far, damaged records skipped), so a player
//! that crossed the damage gets the rest of its title; cursors opened after
//! it play up to the damage, then the runs recorded since (the refill). The
//! view is fixed when a cursor is made, so no cursor ever sees the timeline
//! change under it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use crate::format;
use crate::meta::{encode_metadata, merge_spans};
use crate::segment::{PlayOrder, Segment};
use crate::{fsutil, CacheError, Metadata, Npt, NptRange, NptSpan, PresentationState};

pub const META_FILE: &str = "meta.json";
pub const PLAYED_FILE: &str = "played";
pub const SEGMENT_EXT: &str = "seg";

/// File name of segment `seq` of run `run`.
pub fn segment_name(run: u32, seq: u32) -> String {
    format!("r{run:08}-s{seq:06}.{SEGMENT_EXT}")
}

/// The run and sequence numbers in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<(u32, u32)> {
    let (run, rest) = name.strip_prefix('r')?.split_once("-s")?;
    let seq = rest.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    Some((run.parse().ok()?, seq.parse().ok()?))
}

/// How close to its end a recording must reach for the title to count as
/// complete: the daemon's recorder seals a run `complete` when its last
/// packet is within this of the title's end.
pub const END_SLACK: Npt = Npt::from_secs(1);

/// Whether `spans` hold the whole of an on-demand title: from its start
/// without a gap to within [`END_SLACK`] of its end. A title without an end
/// (live) is never whole.
pub fn holds_whole(range: Option<NptRange>, spans: &[NptSpan]) -> bool {
    let Some(NptRange {
        start,
        end: Some(end),
    }) = range
    else {
        return false;
    };
    NptSpan::held_to(spans, start).saturating_add(END_SLACK) >= end
}

pub struct Presentation {
    pub key: String,
    pub dir: PathBuf,
    pub state: Mutex<PresState>,
    /// Open readers (pins against eviction).
    pub readers: AtomicUsize,
    pub writing: AtomicBool,
    /// Purged or evicted: writers stop, nothing is written any more.
    pub removed: AtomicBool,
    /// Bytes of its files on disk.
    pub bytes: AtomicU64,
    pub last_played_ns: AtomicU64,
    /// The store's count of corrupt records found.
    pub corrupt: Arc<AtomicU64>,
}

pub struct PresState {
    pub meta: Metadata,
    /// Sorted by play order (first npt, then run id).
    pub runs: Vec<Run>,
    /// Highest run number of any segment file, known or not, so a new run
    /// never reuses a file name.
    pub max_run: u32,
    /// Damage found after open, if any (see the module docs).
    pub cut: Option<Cut>,
}

/// Where a cursor found the first damage (in play order) since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The damaged segment.
    pub order: PlayOrder,
    /// Where its intact records end.
    pub offset: u64,
    /// Media time of its last intact record before the damage.
    pub end_ns: Option<u64>,
    /// Runs up to this one were recorded before the damage was found.
    pub max_run: u32,
}

/// Which segments a cursor plays: fixed when the cursor is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Made before any damage was found: every run recorded until the
    /// damage was found, to their ends.
    Whole,
    /// What plays before the damage, then the runs recorded since.
    UpToCut,
}

/// One recording run: the segments one writer produced.
pub struct Run {
    pub id: u32,
    pub start_ns: u64,
    /// Sorted by sequence number.
    pub segments: Vec<Arc<Segment>>,
}

impl Presentation {
    pub fn new(
        key: String,
        dir: PathBuf,
        state: PresState,
        bytes: u64,
        last_played_ns: u64,
        corrupt: Arc<AtomicU64>,
    ) -> Presentation {
        Presentation {
            key,
            dir,
            state: Mutex::new(state),
            readers: AtomicUsize::new(0),
            writing: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            bytes: AtomicU64::new(bytes),
            last_played_ns: AtomicU64::new(last_played_ns),
            corrupt,
        }
    }

    /// Takes note of a corrupt record a cursor found at `offset` of
    /// `segment` (whose mapping is `map`): counted and logged once, and the
    /// presentation is cut there (see the module docs).
    pub fn damaged(&self, segment: &Segment, map: &[u8], offset: u64, what: &str) {
        let Some(first_in_segment) = segment.note_damage(offset) else {
            return; // already seen
        };
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        if first_in_segment {
            warn!(
                key = %self.key,
                file = %segment.path.display(),
                offset,
                what,
                "corrupt record in the cache: skipped; the title is refilled from here"
            );
        }
        // The intact records before it (an earlier stretch a seek jumped
        // over may be damaged too: the cut is then earlier).
        let prefix = format::scan_records(map, segment.header_len, offset);
        let mut state = self.lock();
        let cut = Cut {
            order: segment.play_order(),
            offset: prefix.records_end,
            end_ns: (prefix.record_count > 0).then_some(prefix.max_ns),
            max_run: state.cut.map_or(state.max_run, |c| c.max_run),
        };
        if state
            .cut
            .is_none_or(|c| (cut.order, cut.offset) < (c.order, c.offset))
        {
            state.cut = Some(cut);
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, PresState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_pinned(&self) -> bool {
        self.readers.load(Ordering::Acquire) > 0 || self.writing.load(Ordering::Acquire)
    }

    /// Writes `meta` to the presentation's metadata file, atomically.
    pub fn save_meta(&self, meta: &Metadata) -> Result<(), CacheError> {
        let path = self.dir.join(META_FILE);
        fsutil::write_atomic(&self.dir, META_FILE, &encode_metadata(meta))
            .map_err(|e| CacheError::io(path, e))
    }

    pub fn meta_path(&self) -> PathBuf {
        self.dir.join(META_FILE)
    }
}

impl PresState {
    /// The metadata with spans and state as the segments hold them right
    /// now: a title complete on record is partial once damage was found in
    /// what it holds.
    pub fn live_meta(&self) -> Metadata {
        let mut meta = self.meta.clone();
        meta.spans = self.spans();
        meta.state = self.live_state(&meta.spans);
        meta
    }

    pub fn live_state(&self, spans: &[NptSpan]) -> PresentationState {
        match self.meta.state {
            PresentationState::Complete
                if self.cut.is_some() && !holds_whole(self.meta.range, spans) =>
            {
                PresentationState::Partial
            }
            state => state,
        }
    }

    /// Npt spans held (up to any cut): one per run, merged. A run's segments
    /// are contiguous (open cuts a run at its first missing or damaged
    /// segment), so a run is one span.
    pub fn spans(&self) -> Vec<NptSpan> {
        let runs = self.runs.iter().filter_map(|run| {
            run.segments
                .iter()
                .filter(|s| self.visible(s, View::UpToCut))
                .filter_map(|s| self.span_of(s))
                .reduce(|a, b| NptSpan {
                    start: a.start.min(b.start),
                    end: a.end.max(b.end),
                })
        });
        merge_spans(runs.collect())
    }

    /// A segment's span, up to the cut if it is the damaged one.
    fn span_of(&self, s: &Segment) -> Option<NptSpan> {
        let span = s.span()?;
        match self.cut {
            Some(cut) if cut.order == s.play_order() => {
                let end = Npt::from_ns(cut.end_ns?);
                Some(NptSpan {
                    start: span.start.min(end),
                    end,
                })
            }
            _ => Some(span),
        }
    }

    /// Whether a cursor with `view` plays `s`.
    pub fn visible(&self, s: &Segment, view: View) -> bool {
        match (self.cut, view) {
            (None, _) => true,
            (Some(cut), View::Whole) => s.run <= cut.max_run,
            (Some(cut), View::UpToCut) => s.run > cut.max_run || s.play_order() <= cut.order,
        }
    }

    /// Where a cursor with `view` stops reading `s` (before `committed`).
    pub fn read_limit(&self, s: &Segment, view: View) -> u64 {
        match (self.cut, view) {
            (Some(cut), View::UpToCut) if cut.order == s.play_order() => cut.offset,
            _ => u64::MAX,
        }
    }

    /// The view a cursor made now gets.
    pub fn view(&self) -> View {
        match self.cut {
            None => View::Whole,
            Some(_) => View::UpToCut,
        }
    }

    /// Adds a segment to its run, creating the run in play order if needed.
    pub fn add_segment(&mut self, segment: Arc<Segment>) {
        self.max_run = self.max_run.max(segment.run);
        let run = match self.runs.iter().position(|r| r.id == segment.run) {
            Some(i) => &mut self.runs[i],
            None => {
                let at = self
                    .runs
                    .partition_point(|r| (r.start_ns, r.id) < (segment.run_start_ns, segment.run));
                self.runs.insert(
                    at,
                    Run {
                        id: segment.run,
                        start_ns: segment.run_start_ns,
                        segments: Vec::new(),
                    },
                );
                &mut self.runs[at]
            }
        };
        let at = run.segments.partition_point(|s| s.seq < segment.seq);
        run.segments.insert(at, segment);
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &Arc<Segment>> {
        self.runs.iter().flat_map(|r| r.segments.iter())
    }

    /// The segment played after the one at `order` (the first if `None`).
    pub fn next_after(&self, order: Option<PlayOrder>, view: View) -> Option<Arc<Segment>> {
        self.segments()
            .filter(|s| self.visible(s, view))
            .find(|s| order.is_none_or(|o| o < s.play_order()))
            .cloned()
    }

    /// Where playback of `npt_ns` starts: the indexed random-access record at
    /// or before it, in the last segment (in play order) whose index starts at
    /// or before it. `None` if no indexed record is that early.
    pub fn seek_target(&self, npt_ns: u64, view: View) -> Option<(Arc<Segment>, u64)> {
        let limit = |s: &Segment| self.read_limit(s, view);
        let segment = self
            .segments()
            .rev()
            .filter(|s| self.visible(s, view))
            .find(|s| {
                s.first_index_entry()
                    .is_some_and(|e| e.media_time_ns <= npt_ns && e.offset < limit(s))
            })?;
        let offset = segment.index_at_or_before(npt_ns, limit(segment))?;
        Some((segment.clone(), offset))
    }
}

/// The directory for a new presentation: a hash of the key, with a suffix if
/// another key already has that name.
pub fn dir_for_key(root: &Path, key: &str) -> PathBuf {
    let base = format!("{:016x}", fnv1a64(key.as_bytes()));
    let mut dir = root.join(&base);
    let mut n = 1;
    while dir.exists() {
        dir = root.join(format!("{base}-{n}"));
        n += 1;
    }
    dir
}

/// FNV-1a: stable across builds and platforms (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
