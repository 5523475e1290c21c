//! The store: the map of presentations, opening writers and readers, listing,
//! purging, eviction under the disk budget, and verification.
//!
//! Lock order: the entries map, then a presentation's state. Pins (readers,
//! writing) are taken under the entries lock, and eviction and purging check
//! them under the same lock, so an entry is never removed while it is pinned.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::format::{self, Trailer};
use crate::fsutil::{remove_tree, DiskSpace, TRASH_PREFIX};
use crate::presentation::{dir_for_key, PresState, Presentation, PLAYED_FILE};
use crate::reader::Reader;
use crate::recover::{id_of, Loaded, Mode};
use crate::syncer::Syncer;
use crate::verify::{verify_orphan, verify_presentation, VerifyReport};
use crate::writer::{segment_bytes, Shortage, Writer, DISK_RESERVE};
use crate::{fsutil, recover, CacheError, Metadata, NptSpan, PresentationState, TrackMeta};

mod space;

const LOCK_FILE: &str = ".lock";
/// Smallest segment size accepted: room for the header, a full-size RTP
/// packet and a trailer.
pub const MIN_SEGMENT_BYTES: u64 = 128 * 1024;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Disk budget for all segment and metadata files.
    pub budget_bytes: u64,
    /// A segment is sealed and the next one started at this size (it is also
    /// the space preallocated for each segment).
    pub segment_max_bytes: u64,
    /// ... or when its records span this much media time (0: no limit).
    pub segment_max_duration_ns: u64,
}

/// A presentation as [`Store::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The presentation's directory name in the store: stable while it is
    /// stored and URL-safe (hex digits and `-`), so the admin API names
    /// presentations by it.
    pub id: String,
    pub key: String,
    pub state: PresentationState,
    /// Bytes of its files on disk.
    pub bytes: u64,
    pub spans: Vec<NptSpan>,
    pub tracks: Vec<TrackMeta>,
    pub last_played: SystemTime,
    pub readers: usize,
    pub writing: bool,
}

/// A directory in the store that is not a presentation it can play: segments
/// without usable metadata (an orphan), metadata that contradicts itself,
/// or metadata of another format version. Opened for writing, the store
/// reclaims the first two at open; read-only it lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanInfo {
    /// The directory's name.
    pub id: String,
    pub path: PathBuf,
    /// Bytes of its files.
    pub bytes: u64,
    /// Segment files in it.
    pub segments: usize,
    /// Why it is not a presentation.
    pub reason: String,
}

/// The store. Cloning is cheap; all clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub cfg: StoreConfig,
    entries: Mutex<HashMap<String, Arc<Presentation>>>,
    pub syncer: Syncer,
    mode: Mode,
    /// Presentations evicted for the budget since the store was opened.
    evictions: AtomicU64,
    /// Corrupt records found since the store was opened (at open and by
    /// cursors); shared with every presentation.
    corrupt: Arc<AtomicU64>,
    /// Directories that are not presentations, found at open.
    orphans: Vec<OrphanInfo>,
    /// Held for the store's lifetime: the directory lock (not taken
    /// read-only).
    _lock: Option<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `root` and recovers it. The
    /// problems found (segments cut or skipped, entries that could not be
    /// loaded) are returned beside the store; they do not make it fail.
    ///
    /// Only one process may have a store open this way
    /// ([`CacheError::Locked`]).
    pub fn open(root: &Path, cfg: StoreConfig) -> Result<(Store, Vec<CacheError>), CacheError> {
        Store::open_in(root, cfg, Mode::Repair)
    }

    /// Opens the store in `root` without changing anything on disk, also while
    /// another process has it open (for `cache ls` and `cache verify` beside a
    /// running daemon). Segments that are not sealed are read up to their
    /// last verified record. Writing, purging and eviction fail with
    /// [`CacheError::ReadOnly`] or do nothing.
    pub fn open_read_only(
        root: &Path,
        cfg: StoreConfig,
    ) -> Result<(Store, Vec<CacheError>), CacheError> {
        Store::open_in(root, cfg, Mode::ReadOnly)
    }

    fn open_in(
        root: &Path,
        cfg: StoreConfig,
        mode: Mode,
    ) -> Result<(Store, Vec<CacheError>), CacheError> {
        if cfg.segment_max_bytes < MIN_SEGMENT_BYTES
            || usize::try_from(cfg.segment_max_bytes).is_err()
        {
            return Err(CacheError::Config(format!(
                "segment_max_bytes must be at least {MIN_SEGMENT_BYTES} (got {})",
                cfg.segment_max_bytes
            )));
        }
        let lock = match mode {
            Mode::Repair => Some(lock(root)?),
            Mode::ReadOnly => None,
        };
        let mut problems = Vec::new();
        let mut entries: HashMap<String, Arc<Presentation>> = HashMap::new();
        let mut orphans = Vec::new();
        let corrupt = Arc::new(AtomicU64::new(0));
        for entry in fs::read_dir(root).map_err(|e| CacheError::io(root, e))? {
            let entry = entry.map_err(|e| CacheError::io(root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(TRASH_PREFIX) {
                // A purge that was interrupted (or, read-only, in progress).
                if mode == Mode::Repair {
                    remove_tree(&path);
                }
                continue;
            }
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            match recover::load_presentation(&path, mode, &corrupt, &mut problems) {
                Ok(Loaded::Nothing) => {}
                Ok(Loaded::NotPresentation(info)) => orphans.push(info),
                Ok(Loaded::Presentation(p)) if entries.contains_key(&p.key) => {
                    problems.push(CacheError::corrupt(
                        p.meta_path(),
                        0,
                        format!("a second presentation for key {}; skipped", p.key),
                    ))
                }
                Ok(Loaded::Presentation(p)) => {
                    entries.insert(p.key.clone(), Arc::new(*p));
                }
                Err(e) => problems.push(e),
            }
        }
        let syncer = Syncer::start().map_err(|e| CacheError::io(root, e))?;
        let inner = Inner {
            root: root.to_path_buf(),
            cfg,
            entries: Mutex::new(entries),
            syncer,
            mode,
            evictions: AtomicU64::new(0),
            corrupt,
            orphans,
            _lock: lock,
        };
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            problems,
        ))
    }

    /// Opens a writer for `key`: creates the presentation, or starts a new
    /// recording run of an existing one (its earlier runs stay and play in
    /// npt order). `meta` replaces the metadata, except `key`, `state`
    /// (`Recording` until the writer finishes) and `spans` (kept by the store).
    pub fn open_writer(&self, key: &str, meta: Metadata) -> Result<Writer, CacheError> {
        self.inner.writable()?;
        let (pres, created) = {
            let mut entries = self.inner.entries();
            match entries.get(key) {
                Some(p) => {
                    if p.writing.swap(true, Ordering::AcqRel) {
                        return Err(CacheError::Busy {
                            key: key.to_string(),
                        });
                    }
                    (p.clone(), false)
                }
                None => {
                    let dir = dir_for_key(&self.inner.root, key);
                    fs::create_dir(&dir).map_err(|e| CacheError::io(&dir, e))?;
                    let state = PresState {
                        meta: Metadata {
                            key: key.to_string(),
                            ..meta.clone()
                        },
                        runs: Vec::new(),
                        max_run: 0,
                        cut: None,
                    };
                    let pres = Arc::new(Presentation::new(
                        key.to_string(),
                        dir,
                        state,
                        0,
                        fsutil::now_ns(),
                        self.inner.corrupt.clone(),
                    ));
                    pres.writing.store(true, Ordering::Release);
                    entries.insert(key.to_string(), pres.clone());
                    (pres, true)
                }
            }
        };
        let saved = {
            let mut state = pres.lock();
            let meta = Metadata {
                key: key.to_string(),
                state: PresentationState::Recording,
                spans: state.spans(),
                ..meta
            };
            pres.save_meta(&meta).map(|()| {
                state.meta = meta;
                state.max_run + 1
            })
        };
        match saved {
            Ok(run) => Ok(Writer::new(self.inner.clone(), pres, run)),
            Err(e) => {
                pres.writing.store(false, Ordering::Release);
                if created {
                    self.inner.remove(&pres);
                }
                Err(e)
            }
        }
    }

    /// A reader of `key`, or `None` if the store does not hold it. The reader
    /// pins the presentation against eviction while it (or a cursor from it)
    /// lives, and counts as a play for eviction order.
    pub fn open_reader(&self, key: &str) -> Result<Option<Reader>, CacheError> {
        let pres = {
            let entries = self.inner.entries();
            let Some(pres) = entries.get(key) else {
                return Ok(None);
            };
            pres.readers.fetch_add(1, Ordering::AcqRel);
            pres.clone()
        };
        let now = SystemTime::now();
        pres.last_played_ns
            .store(fsutil::unix_ns(now), Ordering::Relaxed);
        if self.inner.mode == Mode::Repair {
            if let Err(e) = fsutil::touch(&pres.dir.join(PLAYED_FILE), now) {
                warn!(key, error = %e, "cannot record last-played time");
            }
        }
        let meta = pres.lock().live_meta();
        Ok(Some(Reader::new(pres, meta)))
    }

    /// The metadata of `key` (spans as held right now).
    pub fn metadata(&self, key: &str) -> Result<Option<Metadata>, CacheError> {
        let pres = self.inner.entries().get(key).cloned();
        Ok(pres.map(|p| p.lock().live_meta()))
    }

    /// Every presentation held, by key.
    pub fn list(&self) -> Vec<EntryInfo> {
        let presentations: Vec<_> = self.inner.entries().values().cloned().collect();
        let mut list: Vec<EntryInfo> = presentations
            .iter()
            .map(|p| {
                let state = p.lock();
                let spans = state.spans();
                EntryInfo {
                    id: id_of(&p.dir),
                    key: p.key.clone(),
                    state: state.live_state(&spans),
                    bytes: p.bytes.load(Ordering::Relaxed),
                    spans,
                    tracks: state.meta.tracks.clone(),
                    last_played: UNIX_EPOCH
                        + Duration::from_nanos(p.last_played_ns.load(Ordering::Relaxed)),
                    readers: p.readers.load(Ordering::Relaxed),
                    writing: p.writing.load(Ordering::Relaxed),
                }
            })
            .collect();
        list.sort_by(|a, b| a.key.cmp(&b.key));
        list
    }

    /// Removes `key` from the store and disk. Refuses with
    /// [`CacheError::InUse`] if it has readers or a writer, unless `force`:
    /// then cursors keep reading the segments they have already mapped (and
    /// get an error for any other), and a writer fails with
    /// [`CacheError::Purged`] on its next append.
    pub fn purge(&self, key: &str, force: bool) -> Result<(), CacheError> {
        self.inner.writable()?;
        let pres = {
            let mut entries = self.inner.entries();
            let Some(pres) = entries.get(key) else {
                return Err(CacheError::NotFound {
                    key: key.to_string(),
                });
            };
            if pres.is_pinned() && !force {
                return Err(CacheError::InUse {
                    key: key.to_string(),
                    readers: pres.readers.load(Ordering::Relaxed),
                    writing: pres.writing.load(Ordering::Relaxed),
                });
            }
            let pres = pres.clone();
            entries.remove(key);
            pres
        };
        self.inner.remove(&pres);
        Ok(())
    }

    /// Evicts least-recently-played presentations until the store fits its
    /// budget, skipping any with a reader or a writer. Returns their keys.
    pub fn evict_to_budget(&self) -> Vec<String> {
        self.inner.evict(0)
    }

    /// Checks every segment file of the presentation named `which` (a key
    /// or an id; an orphan's id too), or of all presentations and orphans:
    /// headers, every record checksum (past damage too, so each damaged
    /// stretch is reported), sealed segments' trailers, files a cut left
    /// behind. Empty if `which` names nothing. Safe while writers and
    /// readers are at work.
    pub fn verify(&self, which: Option<&str>) -> Vec<VerifyReport> {
        let presentations: Vec<_> = {
            let entries = self.inner.entries();
            match which {
                Some(which) => self.find(&entries, which).cloned().into_iter().collect(),
                None => entries.values().cloned().collect(),
            }
        };
        let mut reports: Vec<_> = presentations
            .iter()
            .map(|p| verify_presentation(p, self.inner.mode == Mode::ReadOnly))
            .collect();
        reports.extend(
            self.inner
                .orphans
                .iter()
                .filter(|o| which.is_none_or(|w| w == o.id))
                .filter(|o| o.path.exists())
                .map(verify_orphan),
        );
        reports.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
        reports
    }

    /// The key of the presentation named `id_or_key` (its key, or its id
    /// as [`EntryInfo::id`] shows it).
    pub fn resolve(&self, id_or_key: &str) -> Option<String> {
        let entries = self.inner.entries();
        self.find(&entries, id_or_key).map(|p| p.key.clone())
    }

    /// The presentation named `id_or_key` (its key or its id).
    pub(crate) fn presentation(&self, id_or_key: &str) -> Option<Arc<Presentation>> {
        let entries = self.inner.entries();
        self.find(&entries, id_or_key).cloned()
    }

    fn find<'a>(
        &self,
        entries: &'a HashMap<String, Arc<Presentation>>,
        id_or_key: &str,
    ) -> Option<&'a Arc<Presentation>> {
        entries
            .get(id_or_key)
            .or_else(|| entries.values().find(|p| id_of(&p.dir) == id_or_key))
    }

    /// Directories that are not presentations (see [`OrphanInfo`]): what
    /// open found and did not reclaim.
    pub fn orphans(&self) -> Vec<OrphanInfo> {
        let mut orphans: Vec<_> = self
            .inner
            .orphans
            .iter()
            .filter(|o| o.path.exists())
            .cloned()
            .collect();
        orphans.sort_by(|a, b| a.id.cmp(&b.id));
        orphans
    }

    /// Corrupt records found since the store was opened: damage cut at open
    /// (one per damaged stretch that cut a run) and corrupt records cursors
    /// skipped (each counted once).
    pub fn corrupt_records(&self) -> u64 {
        self.inner.corrupt.load(Ordering::Relaxed)
    }

    /// Bytes of all presentations' files.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_bytes(&self.inner.entries())
    }

    /// Free and total space of the file system holding the store.
    pub fn disk_space(&self) -> std::io::Result<DiskSpace> {
        fsutil::disk_space(&self.inner.root)
    }

    pub fn config(&self) -> StoreConfig {
        self.inner.cfg
    }

    /// Presentations evicted to stay under the budget since the store was
    /// opened (purges are not counted).
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

/// Takes the store directory's lock, creating the directory if needed.
fn lock(root: &Path) -> Result<File, CacheError> {
    fs::create_dir_all(root).map_err(|e| CacheError::io(root, e))?;
    let lock_path = root.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| CacheError::io(&lock_path, e))?;
    if !fsutil::try_lock_exclusive(&lock).map_err(|e| CacheError::io(&lock_path, e))? {
        return Err(CacheError::Locked {
            path: root.to_path_buf(),
        });
    }
    Ok(lock)
}
