//! The store's error type. Errors about bytes on disk name the file and the
//! byte offset where the problem was found.

use std::path::PathBuf;

use crate::format;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: at offset {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error(
        "{}: format version {major}.{minor} is not supported (this build reads {}.x)",
        path.display(),
        format::MAJOR
    )]
    UnsupportedVersion {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    #[error(
        "{}: cut at offset {offset} after {kept_records} intact records: the data after it was torn or corrupt",
        path.display()
    )]
    Recovered {
        path: PathBuf,
        offset: u64,
        kept_records: u64,
    },
    #[error(
        "{}: damaged at offset {offset} ({what}): kept the {kept_records} intact records before it; dropped {dropped_records} intact records after it and {dropped_segments} later segments of its run, to be refetched",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        what: String,
        kept_records: u64,
        dropped_records: u64,
        dropped_segments: usize,
    },
    #[error("{}: {what}; the presentation is refused as a whole{}", path.display(), if *removed { " and removed, to be fetched anew" } else { "" })]
    Refused {
        path: PathBuf,
        what: String,
        removed: bool,
    },
    #[error("{}: {segments} segments ({bytes} bytes) without usable metadata ({reason}){}", path.display(), if *reclaimed { "; reclaimed" } else { "" })]
    Orphan {
        path: PathBuf,
        segments: usize,
        bytes: u64,
        reason: String,
        reclaimed: bool,
    },
    #[error("{}: disk full: cannot reserve {bytes} bytes for a segment: {source}", path.display())]
    DiskFull {
        path: PathBuf,
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: a new {bytes}-byte segment does not fit the disk budget of {budget} bytes (everything evictable was evicted)")]
    OverBudget {
        key: String,
        bytes: u64,
        budget: u64,
    },
    #[error("{key}: a writer is already open")]
    Busy { key: String },
    #[error("{key}: in use ({readers} readers, writing: {writing})")]
    InUse {
        key: String,
        readers: usize,
        writing: bool,
    },
    #[error("{key}: not in the store")]
    NotFound { key: String },
    #[error("{key}: purged while being written")]
    Purged { key: String },
    #[error("{key}: the writer stopped after an earlier error: {reason}")]
    WriterStopped { key: String, reason: String },
    #[error("{key}: a record of {len} bytes is larger than a segment can hold (at most {max})")]
    RecordTooLarge { key: String, len: usize, max: usize },
    #[error("{}: the store is already open in another process", path.display())]
    Locked { path: PathBuf },
    #[error("{}: the store is open read-only", path.display())]
    ReadOnly { path: PathBuf },
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> CacheError {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        CacheError::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}
