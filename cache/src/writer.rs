//! The writer: appends records to preallocated, memory-mapped segments.
//!
//! The append path is a bounds check, a `memcpy` of header and payload into
//! the mapping with a CRC-32C over them, and an atomic store that publishes
//! the record to readers. A segment is created with its whole size reserved
//! (`posix_fallocate`), so writing through the mapping cannot hit a full disk
//! (which would be a SIGBUS). Its size is the configured one, or what the
//! disk budget and the file system's free space leave (a smaller last
//! segment rather than none); when not even the smallest segment fits,
//! unpinned presentations are evicted, and only then does the writer stop
//! with [`CacheError::DiskFull`], leaving everything written readable.

use std::fs::{self, OpenOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};
use tracing::warn;

use crate::format::{self, IndexBuilder, SegmentHeader, Trailer, HEADER_LEN};
use crate::presentation::{segment_name, Presentation};
use crate::segment::{Segment, SegmentInit};
use crate::store::{Inner, MIN_SEGMENT_BYTES};
use crate::syncer::SyncTarget;
use crate::{fsutil, CacheError, Metadata, PresentationState, RecordIn};

/// Writes one recording run of a presentation. Dropping it without
/// [`Writer::finish`] seals what was written and marks the presentation
/// partial.
pub struct Writer {
    store: Arc<Inner>,
    pres: Arc<Presentation>,
    run: u32,
    /// Media time of the run's first record, once there is one.
    run_start_ns: Option<u64>,
    next_seq: u32,
    active: Option<Active>,
    /// Why appends are refused, after an error.
    stopped: Option<String>,
    closed: bool,
}

/// The segment being appended to.
struct Active {
    segment: Arc<Segment>,
    map: MmapMut,
    sync: Arc<SyncTarget>,
    pos: usize,
    capacity: usize,
    first_ns: u64,
    min_ns: u64,
    max_ns: u64,
    records: u64,
    index: IndexBuilder,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("key", &self.pres.key)
            .field("run", &self.run)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(store: Arc<Inner>, pres: Arc<Presentation>, run: u32) -> Writer {
        Writer {
            store,
            pres,
            run,
            run_start_ns: None,
            next_seq: 0,
            active: None,
            stopped: None,
            closed: false,
        }
    }

    pub fn key(&self) -> &str {
        &self.pres.key
    }

    /// Appends a record. It is visible to readers when this returns.
    pub fn append(&mut self, rec: &RecordIn) -> Result<(), CacheError> {
        if let Some(reason) = &self.stopped {
            return Err(CacheError::WriterStopped {
                key: self.pres.key.clone(),
                reason: reason.clone(),
            });
        }
        if self.pres.removed.load(Ordering::Relaxed) {
            return Err(self.stop(CacheError::Purged {
                key: self.pres.key.clone(),
            }));
        }
        let max = self.store.max_payload();
        if rec.payload.len() > max {
            return Err(CacheError::RecordTooLarge {
                key: self.pres.key.clone(),
                len: rec.payload.len(),
                max,
            });
        }
        let need = format::record_len(rec.payload.len());
        let max_duration = self.store.cfg.segment_max_duration_ns;
        if !self
            .active
            .as_ref()
            .is_some_and(|a| a.fits(need, rec.media_time.as_ns(), max_duration))
        {
            if let Err(e) = self.roll(rec.media_time.as_ns(), need) {
                return Err(self.stop(e));
            }
        }
        match self.active.as_mut() {
            Some(active) => {
                active.write(rec, need);
                Ok(())
            }
            // `roll` either fails or leaves a segment open.
            None => Err(CacheError::WriterStopped {
                key: self.pres.key.clone(),
                reason: "no segment open".into(),
            }),
        }
    }

    /// Replaces the metadata atomically with what `f` makes of it (`key`,
    /// `state` and `spans` stay the store's).
    pub fn update_metadata(&mut self, f: impl FnOnce(&mut Metadata)) -> Result<(), CacheError> {
        let mut state = self.pres.lock();
        let mut meta = state.meta.clone();
        f(&mut meta);
        meta.key = state.meta.key.clone();
        meta.state = state.meta.state;
        meta.spans = state.spans();
        if self.pres.removed.load(Ordering::Acquire) {
            return Err(CacheError::Purged {
                key: self.pres.key.clone(),
            });
        }
        self.pres.save_meta(&meta)?;
        state.meta = meta;
        Ok(())
    }

    /// Seals the last segment and records the spans held and `state`.
    pub fn finish(mut self, state: PresentationState) -> Result<(), CacheError> {
        self.close(state)
    }

    fn close(&mut self, state: PresentationState) -> Result<(), CacheError> {
        self.closed = true;
        let sealed = self.seal_active();
        let saved = if self.pres.removed.load(Ordering::Acquire) {
            Err(CacheError::Purged {
                key: self.pres.key.clone(),
            })
        } else {
            let mut pres_state = self.pres.lock();
            let mut meta = pres_state.meta.clone();
            meta.state = state;
            meta.spans = pres_state.spans();
            self.pres.save_meta(&meta).map(|()| pres_state.meta = meta)
        };
        // Last: a cursor that sees no writer knows every segment is final.
        self.pres.writing.store(false, Ordering::Release);
        sealed.and(saved)
    }

    /// Refuses further appends; returns `e` for the caller to report.
    fn stop(&mut self, e: CacheError) -> CacheError {
        self.stopped = Some(e.to_string());
        // What was written stays readable: seal it now.
        if let Err(seal) = self.seal_active() {
            warn!(key = %self.pres.key, error = %seal, "cannot seal segment after error");
        }
        e
    }

    /// Seals the open segment (if any) and opens the next one.
    fn roll(&mut self, first_ns: u64, need: usize) -> Result<(), CacheError> {
        self.seal_active()?;
        self.open_segment(first_ns, need)
    }

    /// Opens the next segment, its first record needing `need` bytes. Its
    /// size adapts to the space there is (see [`segment_bytes`]): evicting
    /// unpinned presentations when even the smallest segment does not fit,
    /// and trying once more when the reservation itself finds the disk full
    /// (the space seen may be taken by then).
    fn open_segment(&mut self, first_ns: u64, need: usize) -> Result<(), CacheError> {
        let floor = (HEADER_LEN + need + Trailer::encoded_len(1)) as u64;
        let mut evicted = false;
        loop {
            let bytes = self.store.segment_room(floor, &self.pres.key)?;
            match self.create_segment(first_ns, bytes) {
                Err(CacheError::DiskFull { .. }) if !evicted => {
                    evicted = true;
                    self.store.evict_for_disk(bytes);
                }
                result => return result,
            }
        }
    }

    /// Creates and maps a segment of `bytes`, its space reserved.
    fn create_segment(&mut self, first_ns: u64, bytes: u64) -> Result<(), CacheError> {
        let capacity = usize::try_from(bytes).unwrap_or(usize::MAX);
        let run_start_ns = *self.run_start_ns.get_or_insert(first_ns);
        let name = segment_name(self.run, self.next_seq);
        let path = self.pres.dir.join(&name);
        // Created under a temporary name: a `.seg` file always has a header.
        let tmp = self.pres.dir.join(format!("{name}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| CacheError::io(&tmp, e))?;
        let prepared = fsutil::reserve(&file, bytes)
            .map_err(|e| {
                if fsutil::is_out_of_space(&e) {
                    CacheError::DiskFull {
                        path: path.clone(),
                        bytes,
                        source: e,
                    }
                } else {
                    CacheError::io(&tmp, e)
                }
            })
            .and_then(|()| {
                // SAFETY: the file is new and only this writer writes it;
                // its whole length is reserved, so no write through the
                // mapping can fault for lack of space.
                unsafe { MmapOptions::new().len(capacity).map_mut(&file) }
                    .map_err(|e| CacheError::io(&tmp, e))
            })
            .and_then(|mut map| {
                let header = SegmentHeader::new(
                    self.run,
                    self.next_seq,
                    run_start_ns,
                    fsutil::now_ns(),
                    bytes,
                );
                map[..HEADER_LEN].copy_from_slice(&header.encode());
                fs::rename(&tmp, &path).map_err(|e| CacheError::io(&path, e))?;
                Ok((map, header))
            });
        let (map, header) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let segment = Segment::new(SegmentInit {
            path: path.clone(),
            header,
            committed: HEADER_LEN as u64,
            sealed: false,
            records: 0,
            min_ns: 0,
            max_ns: 0,
            index: Vec::new(),
        });
        self.pres.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.pres.lock().add_segment(segment.clone());
        self.next_seq += 1;
        let sync = SyncTarget::new(file, path);
        sync.mark_dirty();
        self.store.syncer.watch(sync.clone());
        self.store.syncer.sync_dir(self.pres.dir.clone());
        self.active = Some(Active {
            segment,
            map,
            sync,
            pos: HEADER_LEN,
            capacity,
            first_ns,
            min_ns: u64::MAX,
            max_ns: 0,
            records: 0,
            index: IndexBuilder::default(),
        });
        Ok(())
    }

    /// Writes the open segment's trailer, trims the file to it and marks the
    /// segment sealed.
    fn seal_active(&mut self) -> Result<(), CacheError> {
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        let trailer = Trailer {
            records_end: active.pos as u64,
            record_count: active.records,
            min_ns: if active.records == 0 {
                0
            } else {
                active.min_ns
            },
            max_ns: active.max_ns,
            flags: format::TRAILER_FINAL,
            index: active.index.into_entries(),
        };
        let end = active.pos + Trailer::encoded_len(trailer.index.len());
        // In bounds: `fits` kept room for the trailer of every index entry.
        trailer.encode_into(&mut active.map[active.pos..end]);
        // Unmap before trimming the file under the mapping.
        drop(active.map);
        let segment = &active.segment;
        let trimmed = active.sync.file.set_len(end as u64);
        if trimmed.is_ok() {
            self.pres
                .bytes
                .fetch_sub((active.capacity - end) as u64, Ordering::Relaxed);
        }
        segment.sealed.store(true, Ordering::Release);
        active.sync.mark_dirty();
        self.store.syncer.release(active.sync);
        // Not trimmed, the segment is still sealed (its trailer is written);
        // the next open trims it.
        trimmed.map_err(|e| CacheError::io(&segment.path, e))
    }
}

impl Active {
    /// Whether a record of `need` bytes at `media_time_ns` belongs in this
    /// segment (leaving room for the trailer with one more index entry).
    #[inline]
    fn fits(&self, need: usize, media_time_ns: u64, max_duration_ns: u64) -> bool {
        let room =
            self.pos + need + Trailer::encoded_len(self.index.entries().len() + 1) <= self.capacity;
        let young = self.records == 0
            || max_duration_ns == 0
            || media_time_ns.saturating_sub(self.first_ns) < max_duration_ns;
        room && young
    }

    #[inline]
    fn write(&mut self, rec: &RecordIn, need: usize) {
        let start = self.pos;
        let end = start + need;
        format::encode_record(rec, &mut self.map[start..end]);
        self.pos = end;
        self.records += 1;
        self.min_ns = self.min_ns.min(rec.media_time.as_ns());
        self.max_ns = self.max_ns.max(rec.media_time.as_ns());
        let segment = &self.segment;
        segment.records.store(self.records, Ordering::Relaxed);
        segment.min_ns.store(self.min_ns, Ordering::Relaxed);
        segment.max_ns.store(self.max_ns, Ordering::Relaxed);
        // Publish: readers may read up to `end` from now on.
        segment.committed.store(end as u64, Ordering::Release);
        // Indexed after publishing, so a seek never lands past `committed`.
        if let Some(entry) = self
            .index
            .observe(rec.flags, rec.media_time.as_ns(), start as u64)
        {
            segment
                .index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry);
        }
        self.sync.mark_dirty();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.closed {
            if let Err(e) = self.close(PresentationState::Partial) {
                warn!(key = %self.pres.key, error = %e, "writer dropped: cannot seal");
            }
        }
    }
}

/// Space a new segment leaves free on the file system: for the metadata
/// files the store rewrites (atomically, through a temporary copy) as it
/// records and seals.
pub(crate) const DISK_RESERVE: u64 = 256 * 1024;
/// Segments are sized in whole pages.
const SEGMENT_GRAIN: u64 = 4096;

/// Why no segment can be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortage {
    /// The disk budget has less room than the smallest segment.
    Budget,
    /// The file system has less free space than the smallest segment.
    Disk,
}

/// The bytes to preallocate for a new segment: the configured
/// `segment_max`, or less when the file system (`available`, keeping
/// [`DISK_RESERVE`] free) or the budget (`headroom`) has less room, down to
/// `floor` (what the segment's first record needs, or [`MIN_SEGMENT_BYTES`]
/// if more: no smaller slivers) — a smaller last segment rather than none.
pub(crate) fn segment_bytes(
    segment_max: u64,
    available: u64,
    headroom: u64,
    floor: u64,
) -> Result<u64, Shortage> {
    let floor = floor.max(MIN_SEGMENT_BYTES).min(segment_max);
    if headroom < floor {
        return Err(Shortage::Budget);
    }
    let on_disk = available.saturating_sub(DISK_RESERVE);
    if on_disk < floor {
        return Err(Shortage::Disk);
    }
    let bytes = segment_max.min(on_disk).min(headroom);
    // Whole pages when that still leaves the floor.
    Ok(Some(bytes - bytes % SEGMENT_GRAIN)
        .filter(|&b| b >= floor)
        .unwrap_or(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_segment_is_full_size_when_there_is_room() {
        assert_eq!(
            segment_bytes(64 * MIB, 10 << 30, 10 << 30, 2000),
            Ok(64 * MIB)
        );
    }

    #[test]
    fn a_segment_shrinks_to_the_free_space_and_the_budget() {
        // 1.5 MB free: what is left after the reserve, in whole pages.
        let free = 1_500_000;
        let bytes = segment_bytes(64 * MIB, free, 10 << 30, 2000).unwrap();
        assert!(bytes <= free - DISK_RESERVE && bytes > free - DISK_RESERVE - 4096);
        assert_eq!(bytes % 4096, 0);
        assert_eq!(
            segment_bytes(64 * MIB, 10 << 30, 3 * MIB, 2000),
            Ok(3 * MIB)
        );
    }

    #[test]
    fn no_segment_below_the_floor() {
        let floor = MIN_SEGMENT_BYTES;
        assert_eq!(
            segment_bytes(64 * MIB, DISK_RESERVE + floor - 1, 10 << 30, 2000),
            Err(Shortage::Disk)
        );
        assert_eq!(
            segment_bytes(64 * MIB, DISK_RESERVE + floor, 10 << 30, 2000),
            Ok(floor)
        );
        assert_eq!(
            segment_bytes(64 * MIB, 10 << 30, floor - 1, 2000),
            Err(Shortage::Budget)
        );
        // A large first record raises the floor.
        assert_eq!(
            segment_bytes(64 * MIB, DISK_RESERVE + MIB, 10 << 30, MIB + 1),
            Err(Shortage::Disk)
        );
        // A configured segment smaller than the floor is the floor.
        assert_eq!(segment_bytes(MIB, 10 << 30, MIB, 2 * MIB), Ok(MIB));
    }
}
