//! Readers and cursors: zero-copy playback from the segment mappings, with a
//! live tail and seeking.
//!
//! A cursor walks segments in play order (runs by first npt, then segment
//! number). In each it reads only below the segment's `committed` offset, and
//! moves on once the segment is sealed and read to its end. Every record's
//! checksum is verified before it is handed out; a bad one is reported as an
//! error naming file and offset, and the cursor skips exactly the damaged
//! bytes: it resumes at the next offset where an intact record starts
//! ([`format::resync`]), so a damaged length field loses nothing more. The
//! presentation is told ([`Presentation::damaged`]: counted, logged, cut).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format;
use crate::presentation::{Presentation, View};
use crate::segment::{Mapping, PlayOrder, Segment};
use crate::{CacheError, Metadata, Npt, Record};

/// Pins a presentation against eviction while it lives.
struct Pin {
    pres: Arc<Presentation>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.pres.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A presentation opened for reading. It and its cursors pin the
/// presentation against eviction.
pub struct Reader {
    pin: Arc<Pin>,
    meta: Metadata,
}

impl Reader {
    /// `pres.readers` must already count this reader.
    pub(crate) fn new(pres: Arc<Presentation>, meta: Metadata) -> Reader {
        Reader {
            pin: Arc::new(Pin { pres }),
            meta,
        }
    }

    /// The metadata as it was when the reader was opened.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The media times of the indexed random-access records, in play
    /// order: where a [`Cursor::seek`] can land. Every video keyframe is
    /// indexed (see FORMAT.md, "Sparse index"), so this is how a server
    /// cuts a title into segments without reading it.
    pub fn random_access_points(&self) -> Vec<Npt> {
        let mut points = Vec::new();
        self.scan_random_access_points(|npt| {
            points.push(npt);
            ControlFlow::Continue(())
        });
        points
    }

    /// The first of [`Reader::random_access_points`], without listing them
    /// all (a PLAY from the start asks for it).
    pub fn first_random_access_point(&self) -> Option<Npt> {
        let mut first = None;
        self.scan_random_access_points(|npt| {
            first = Some(npt);
            ControlFlow::Break(())
        });
        first
    }

    /// Visits the indexed random-access records' media times in play order
    /// until `visit` breaks.
    fn scan_random_access_points(&self, mut visit: impl FnMut(Npt) -> ControlFlow<()>) {
        let state = self.pin.pres.lock();
        let view = state.view();
        for segment in state.segments().filter(|s| state.visible(s, view)) {
            let limit = state.read_limit(segment, view);
            let index = segment.index.read().unwrap_or_else(|p| p.into_inner());
            for entry in index.iter().filter(|e| e.offset < limit) {
                if visit(Npt::from_ns(entry.media_time_ns)).is_break() {
                    return;
                }
            }
        }
    }

    /// A cursor at the start of the presentation.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            view: self.pin.pres.lock().view(),
            pin: self.pin.clone(),
            at: None,
            last: None,
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("key", &self.meta.key)
            .finish_non_exhaustive()
    }
}

/// A forward cursor over a presentation's records.
pub struct Cursor {
    pin: Arc<Pin>,
    at: Option<Position>,
    /// Play order of the segment last entered (or skipped).
    last: Option<PlayOrder>,
    /// Which segments it plays (see `presentation`'s module docs).
    view: View,
}

struct Position {
    segment: Arc<Segment>,
    map: Arc<Mapping>,
    pos: u64,
    /// `committed` as last seen (or the cut, if this view stops there).
    end: u64,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Cursor");
        d.field("key", &self.pin.pres.key);
        if let Some(at) = &self.at {
            d.field("segment", &at.segment.path)
                .field("offset", &at.pos);
        }
        d.finish()
    }
}

impl Cursor {
    /// Moves to the random-access record at or before `npt` (through the
    /// sparse index), or to the start if there is none that early.
    pub fn seek(&mut self, npt: Npt) -> Result<(), CacheError> {
        let target = {
            let state = self.pin.pres.lock();
            state.seek_target(npt.as_ns(), self.view).or_else(|| {
                let first = state.next_after(None, self.view)?;
                let start = first.header_len;
                Some((first, start))
            })
        };
        self.at = None;
        self.last = None;
        if let Some((segment, offset)) = target {
            self.enter(segment, offset)?;
        }
        Ok(())
    }

    /// The next record. `None` means caught up: either the end, or (while a
    /// writer is at work) nothing more yet; call again later for a live tail
    /// and see [`Cursor::is_complete`].
    #[allow(clippy::should_implement_trait)] // records borrow the cursor: not an Iterator
    pub fn next(&mut self) -> Option<Result<Record<'_>, CacheError>> {
        match self.advance() {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(e)),
        }
        let at = self.at.as_mut()?;
        let decoded = if at.map.is_verified(at.pos) {
            format::decode_verified_record(&at.map, at.pos, at.end)
        } else {
            let decoded = format::decode_record(&at.map, at.pos, at.end);
            if let Ok((_, next)) = &decoded {
                at.map.verified(at.pos, *next);
            }
            decoded
        };
        match decoded {
            Ok((record, next)) => {
                at.pos = next;
                Some(Ok(record))
            }
            Err(stop) => {
                let offset = at.pos;
                // `end` is a record boundary: reading on from it is safe
                // even when nothing intact follows before it.
                at.pos = format::resync(&at.map, offset, at.end).unwrap_or(at.end);
                self.pin
                    .pres
                    .damaged(&at.segment, &at.map, offset, stop.describe());
                Some(Err(CacheError::corrupt(
                    &at.segment.path,
                    offset,
                    stop.describe(),
                )))
            }
        }
    }

    /// The writer has finished and the cursor has read everything.
    pub fn is_complete(&self) -> bool {
        // Loaded first: once no writer is open, every segment is final.
        if self.pin.pres.writing.load(Ordering::Acquire) {
            return false;
        }
        let last = match &self.at {
            None => self.last,
            Some(at) => {
                let limit = self.pin.pres.lock().read_limit(&at.segment, self.view);
                let done = at.pos >= at.segment.committed.load(Ordering::Acquire).min(limit);
                if !done {
                    return false;
                }
                Some(at.segment.play_order())
            }
        };
        self.pin.pres.lock().next_after(last, self.view).is_none()
    }

    /// Makes `at` point at an unread record: `Ok(false)` if there is none.
    fn advance(&mut self) -> Result<bool, CacheError> {
        loop {
            if let Some(at) = self.at.as_mut() {
                if at.pos < at.end {
                    return Ok(true);
                }
                // Sealed first: once sealed, `committed` is final.
                let sealed = at.segment.sealed.load(Ordering::Acquire);
                let committed = at.segment.committed.load(Ordering::Acquire);
                let limit = self.pin.pres.lock().read_limit(&at.segment, self.view);
                if committed.min(limit) > at.end {
                    at.end = committed.min(limit);
                    continue;
                }
                if !sealed && limit == u64::MAX {
                    return Ok(false);
                }
            }
            let next = self.pin.pres.lock().next_after(self.last, self.view);
            let Some(segment) = next else {
                return Ok(false);
            };
            let start = segment.header_len;
            self.enter(segment, start)?;
        }
    }

    /// Positions the cursor at `offset` of `segment`. On error the cursor is
    /// past the segment, so the next call moves on.
    fn enter(&mut self, segment: Arc<Segment>, offset: u64) -> Result<(), CacheError> {
        self.last = Some(segment.play_order());
        self.at = None;
        let map = segment.map()?;
        let limit = self.pin.pres.lock().read_limit(&segment, self.view);
        let end = segment.committed.load(Ordering::Acquire).min(limit);
        self.at = Some(Position {
            segment,
            map,
            pos: offset,
            end,
        });
        Ok(())
    }
}
