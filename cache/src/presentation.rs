//! A presentation in memory: its metadata, its recording runs and their
//! segments in play order, and the counters eviction looks at.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::meta::{encode_metadata, merge_spans};
use crate::segment::{PlayOrder, Segment};
use crate::{fsutil, CacheError, Metadata, NptSpan};

pub const META_FILE: &str = "meta.json";
pub const PLAYED_FILE: &str = "played";
pub const SEGMENT_EXT: &str = "seg";

/// File name of segment `seq` of run `run`.
pub fn segment_name(run: u32, seq: u32) -> String {
    format!("r{run:08}-s{seq:06}.{SEGMENT_EXT}")
}

/// The run number in a segment file name.
pub fn run_of_name(name: &str) -> Option<u32> {
    name.strip_prefix('r')?.split_once("-s")?.0.parse().ok()
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
}

pub struct PresState {
    pub meta: Metadata,
    /// Sorted by play order (first npt, then run id).
    pub runs: Vec<Run>,
    /// Highest run number of any segment file, known or not, so a new run
    /// never reuses a file name.
    pub max_run: u32,
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
    /// The metadata with spans as the segments hold them right now.
    pub fn live_meta(&self) -> Metadata {
        let mut meta = self.meta.clone();
        meta.spans = self.spans();
        meta
    }

    /// Npt spans held: one per run, merged.
    pub fn spans(&self) -> Vec<NptSpan> {
        let runs = self.runs.iter().filter_map(|run| {
            run.segments
                .iter()
                .filter_map(|s| s.span())
                .reduce(|a, b| NptSpan {
                    start: a.start.min(b.start),
                    end: a.end.max(b.end),
                })
        });
        merge_spans(runs.collect())
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
    pub fn next_after(&self, order: Option<PlayOrder>) -> Option<Arc<Segment>> {
        self.segments()
            .find(|s| order.is_none_or(|o| o < s.play_order()))
            .cloned()
    }

    /// Where playback of `npt_ns` starts: the indexed random-access record at
    /// or before it, in the last segment (in play order) whose index starts at
    /// or before it. `None` if no indexed record is that early.
    pub fn seek_target(&self, npt_ns: u64) -> Option<(Arc<Segment>, u64)> {
        let segment = self
            .segments()
            .rev()
            .find(|s| s.first_index_time().is_some_and(|t| t <= npt_ns))?;
        let offset = segment.index_at_or_before(npt_ns)?;
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
