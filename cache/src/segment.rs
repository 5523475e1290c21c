//! A segment as the store tracks it in memory: where its verified records end,
//! whether it is sealed, its sparse index, and a shared read-only mapping.
//!
//! One `Segment` is shared by the writer (which publishes progress through
//! `committed`) and every cursor. The writer stores `committed` with release
//! ordering after copying a record into its own mapping; cursors load it with
//! acquire ordering and only ever read bytes below it, which never change
//! again. Both mappings are of the same page-cache pages, so what the writer
//! copied is what readers see.

use std::fs::File;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use memmap2::{Mmap, MmapOptions};

use crate::format::{IndexEntry, SegmentHeader};
use crate::{CacheError, Npt, NptSpan};

/// Plays segments in this order: runs by first npt, then segments of a run.
pub type PlayOrder = (u64, u32, u32);

pub struct Segment {
    pub path: PathBuf,
    pub run: u32,
    pub seq: u32,
    pub run_start_ns: u64,
    pub header_len: u64,
    /// End of the records readers may read.
    pub committed: AtomicU64,
    /// No record will be added after `committed`.
    pub sealed: AtomicBool,
    pub records: AtomicU64,
    pub min_ns: AtomicU64,
    pub max_ns: AtomicU64,
    pub index: RwLock<Vec<IndexEntry>>,
    /// The mapping while any cursor uses it (see [`Mapping`]).
    map: Mutex<Weak<Mapping>>,
    /// Offsets where cursors found corrupt records since open.
    damage: Mutex<Vec<u64>>,
}

/// What is known of a segment when it is registered.
pub struct SegmentInit {
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub committed: u64,
    pub sealed: bool,
    pub records: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub index: Vec<IndexEntry>,
}

impl Segment {
    pub fn new(init: SegmentInit) -> Arc<Segment> {
        Arc::new(Segment {
            path: init.path,
            run: init.header.run,
            seq: init.header.seq,
            run_start_ns: init.header.run_start_ns,
            header_len: u64::from(init.header.header_len),
            committed: AtomicU64::new(init.committed),
            sealed: AtomicBool::new(init.sealed),
            records: AtomicU64::new(init.records),
            min_ns: AtomicU64::new(init.min_ns),
            max_ns: AtomicU64::new(init.max_ns),
            index: RwLock::new(init.index),
            map: Mutex::new(Weak::new()),
            damage: Mutex::new(Vec::new()),
        })
    }

    /// Notes damage at `offset`: `None` if it was noted before, else whether
    /// it is the first damage noted in this segment.
    pub fn note_damage(&self, offset: u64) -> Option<bool> {
        let mut seen = self.damage.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&offset) {
            return None;
        }
        seen.push(offset);
        Some(seen.len() == 1)
    }

    pub fn play_order(&self) -> PlayOrder {
        (self.run_start_ns, self.run, self.seq)
    }

    /// The npt span of its records, if it has any.
    pub fn span(&self) -> Option<NptSpan> {
        (self.records.load(Ordering::Relaxed) > 0).then(|| NptSpan {
            start: Npt::from_ns(self.min_ns.load(Ordering::Relaxed)),
            end: Npt::from_ns(self.max_ns.load(Ordering::Relaxed)),
        })
    }

    /// The read-only mapping shared by all cursors, made when the first
    /// of them needs it and let go with the last.
    ///
    /// A mapping made while the segment was open covers its preallocated
    /// length, which sealing later trims; that is harmless because nothing
    /// reads past `committed`, which stays below the trimmed length.
    pub fn map(&self) -> Result<Arc<Mapping>, CacheError> {
        let mut slot = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = slot.upgrade() {
            return Ok(map);
        }
        let map = Arc::new(Mapping {
            bytes: map_file(&self.path)?,
            verified_to: AtomicU64::new(self.header_len),
        });
        *slot = Arc::downgrade(&map);
        Ok(map)
    }

    /// The segment's first index entry, if it has one.
    pub fn first_index_entry(&self) -> Option<IndexEntry> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .copied()
    }

    /// Offset of the last index entry at or before `npt_ns`, among those
    /// before `limit`.
    pub fn index_at_or_before(&self, npt_ns: u64, limit: u64) -> Option<u64> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let after = index.partition_point(|e| e.media_time_ns <= npt_ns && e.offset < limit);
        after
            .checked_sub(1)
            .and_then(|i| index.get(i))
            .map(|e| e.offset)
    }
}

/// A segment file mapped, and how much of it readers found intact.
///
/// Hundreds of players of a title read the same records at about the same
/// time; checking every record's checksum once per player was a tenth of
/// the daemon's cycles. The records from the start of the data up to
/// `verified_to` were found intact by some cursor of this mapping, and the
/// others skip their checksum (every other check stays). The mapping, and
/// with it what was verified, is let go when its last cursor ends, so the
/// next play checks again: damage done on disk while players read a
/// title goes unnoticed only by those already past it in memory.
pub struct Mapping {
    bytes: Mmap,
    verified_to: AtomicU64,
}

impl Mapping {
    /// Whether the record at `offset` (a record boundary) was verified.
    pub fn is_verified(&self, offset: u64) -> bool {
        offset < self.verified_to.load(Ordering::Acquire)
    }

    /// The record at `offset`, ending at `next`, was found intact: the
    /// verified span grows when it is the next one.
    pub fn verified(&self, offset: u64, next: u64) {
        let _ =
            self.verified_to
                .compare_exchange(offset, next, Ordering::AcqRel, Ordering::Relaxed);
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Maps a whole segment file read-only.
pub fn map_file(path: &std::path::Path) -> Result<Mmap, CacheError> {
    let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
    // SAFETY: segment files are only modified by this process's writer, and
    // only in the bytes past `committed`, which readers never touch; sealing
    // trims the file only past the trailer. See the module docs.
    unsafe { MmapOptions::new().map(&file) }.map_err(|e| CacheError::io(path, e))
}
