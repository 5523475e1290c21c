//! A presentation's segments as another node sees them: which files, in
//! play order, how far each is readable now and whether it will grow. The
//! daemon's peer server (node-to-node copies) serves these bytes; it reads
//! the files itself, up to [`SegmentInfo::readable`], which is always a
//! record boundary (or, sealed, the end of the file).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::format::IndexEntry;
use crate::presentation::View;
use crate::recover::id_of;
use crate::{Metadata, Store};

/// One segment of a presentation (see [`Store::title`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file's name in the presentation's directory.
    pub name: String,
    pub path: PathBuf,
    pub run: u32,
    pub seq: u32,
    pub run_start_ns: u64,
    /// Offset of its first record.
    pub header_len: u64,
    /// Where its verified records end now.
    pub records_end: u64,
    /// Bytes that may be read now: the records (a growing segment), or
    /// the whole file with its trailer once sealed.
    pub readable: u64,
    /// Its trailer is written: the file will not change any more.
    pub sealed: bool,
    /// Nothing will be added to it any more (sealed, or cut at damage: then
    /// it is readable only up to the damage).
    pub is_final: bool,
    pub records: u64,
    /// Media time of its first and last records, if it has any.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Its sparse index so far (random-access records: npt, offset).
    pub index: Vec<IndexEntry>,
}

/// A presentation and its segments in play order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TitleInfo {
    pub id: String,
    /// Its metadata, state and spans as held now.
    pub meta: Metadata,
    /// A writer is recording it now.
    pub writing: bool,
    pub segments: Vec<SegmentInfo>,
}

impl Store {
    /// The presentation named `id_or_key` and its segments in play order,
    /// as a cursor opened now would play them (up to damage found since
    /// open), or `None` if the store does not hold it.
    pub fn title(&self, id_or_key: &str) -> Option<TitleInfo> {
        let pres = self.presentation(id_or_key)?;
        // Loaded before the segments: a writer seen closed left every
        // segment final.
        let writing = pres.writing.load(Ordering::Acquire);
        let state = pres.lock();
        let view = View::UpToCut;
        let segments = state
            .segments()
            .filter(|s| state.visible(s, view))
            .map(|s| {
                // Sealed first: once sealed, `committed` is final.
                let sealed = s.sealed.load(Ordering::Acquire);
                let committed = s.committed.load(Ordering::Acquire);
                let limit = state.read_limit(s, view);
                let cut = limit < u64::MAX;
                let records_end = committed.min(limit);
                let readable = if sealed && !cut {
                    std::fs::metadata(&s.path).map_or(records_end, |m| m.len())
                } else {
                    records_end
                };
                let span = s.span();
                SegmentInfo {
                    name: s
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    path: s.path.clone(),
                    run: s.run,
                    seq: s.seq,
                    run_start_ns: s.run_start_ns,
                    header_len: s.header_len,
                    records_end,
                    readable,
                    sealed: sealed && !cut,
                    is_final: sealed || cut,
                    records: s.records.load(Ordering::Relaxed),
                    first_ns: span.map(|s| s.start.as_ns()),
                    last_ns: span.map(|s| s.end.as_ns()),
                    index: s
                        .index
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|e| e.offset < records_end)
                        .copied()
                        .collect(),
                }
            })
            .collect();
        Some(TitleInfo {
            id: id_of(&pres.dir),
            meta: state.live_meta(),
            writing,
            segments,
        })
    }
}
