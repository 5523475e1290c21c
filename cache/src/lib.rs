//! streamcache's on-disk streaming store.
//!
//! A [`Store`] is a directory of *presentations*. Each presentation is a
//! directory holding its [`Metadata`] (`meta.json`, replaced atomically) and
//! its segment files. A segment file holds records (one RTP or RTCP packet
//! each, exactly as received, with track, kind, flags, npt and a CRC-32C) in
//! arrival order, every track interleaved, so playback is one forward scan over
//! sequential bytes. The byte layout is specified in `docs/FORMAT.md`.
//!
//! - **Writing**: [`Writer::append`] copies a record into a preallocated,
//!   memory-mapped segment and publishes it to readers with one atomic store.
//!   Durability is left to a background syncer thread (`fdatasync` once a
//!   second per dirty segment), so the append path never blocks on `msync`.
//!   Segments roll over at a size or a duration; a sealed segment gets a
//!   trailer (final flag, counts, sparse index) and is cut to its used length.
//! - **Reading**: a [`Reader`] pins its presentation against eviction; its
//!   [`Cursor`]s yield [`Record`]s whose payload borrows the read-only mapping
//!   (no copy), follow a live writer (live tail), and seek through the sparse
//!   index.
//! - **Partial fill**: a presentation may be written by several *runs* over
//!   time (one per [`Store::open_writer`]). Each run has its own segments;
//!   cursors play runs in the order of their first npt.
//! - **Crash safety and damage**: every record is checksummed.
//!   [`Store::open`] verifies every record of every segment, cuts each
//!   recording run at its first torn or damaged record (the rest is
//!   refetched like any partial title), seals what it keeps, recomputes each
//!   title's state and spans from it, and reclaims directories it cannot
//!   play. Nothing torn is ever served; a cursor that meets damage made
//!   after open skips exactly the damaged bytes.
//! - **Eviction**: [`Store::evict_to_budget`] removes least-recently-played
//!   presentations until the store fits its budget, never one with a reader
//!   or a writer. It also runs whenever a writer starts a new segment, and
//!   when the file system has too little free space for the smallest one.
//!
//! The index of entries is a `HashMap` under a mutex, not `moka`: eviction has
//! to skip pinned entries (open readers or a writer) and delete files
//! synchronously and deterministically, which a concurrent cache's own
//! (asynchronous, approximate) eviction cannot express; and a store holds at
//! most thousands of entries, so sorting them by last-played time when the
//! budget is exceeded costs nothing worth a dependency.
//!
//! The store is synchronous (no async runtime), `Send + Sync` and cheap to
//! clone. Only one process may open a store directory for writing at a time
//! (an advisory lock on `<root>/.lock`); [`Store::open_read_only`] lets tools
//! list and verify a store while the daemon writes it.

mod error;
pub mod format;
mod fsutil;
mod listing;
mod meta;
mod presentation;
mod reader;
mod recover;
mod segment;
mod store;
mod syncer;
mod verify;
mod writer;

pub use error::CacheError;
pub use fsutil::DiskSpace;
pub use listing::{SegmentInfo, TitleInfo};
pub use meta::{
    parse_metadata, CacheHeaders, Metadata, NptRange, NptSpan, PresentationState, TrackMeta,
};
pub use reader::{Cursor, Reader};
pub use store::{EntryInfo, OrphanInfo, Store, StoreConfig};
pub use streamcache_types::Npt;
pub use verify::VerifyReport;
pub use writer::Writer;

/// Whether a record holds an RTP or an RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Rtp,
    Rtcp,
}

/// Per-record flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordFlags {
    /// Playback may start at this record (a key frame, or any audio packet of
    /// an audio-only presentation). Indexed for seeking.
    pub random_access: bool,
    /// The stream is not continuous with the previous record of its track
    /// (origin reconnect, gap).
    pub discontinuity: bool,
}

/// A record handed to [`Writer::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIn<'a> {
    /// Index into the presentation's track list.
    pub track: u8,
    pub kind: RecordKind,
    pub flags: RecordFlags,
    /// Normal play time of the record.
    pub media_time: Npt,
    /// The packet bytes exactly as they came off the wire.
    pub payload: &'a [u8],
}

/// A record read back from a segment. `payload` borrows the segment mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub track: u8,
    pub kind: RecordKind,
    pub flags: RecordFlags,
    pub media_time: Npt,
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record as the input it was written from.
    pub fn as_input(&self) -> RecordIn<'a> {
        RecordIn {
            track: self.track,
            kind: self.kind,
            flags: self.flags,
            media_time: self.media_time,
            payload: self.payload,
        }
    }
}
