//! The vocabulary every streamcache crate shares, so that the protocol
//! (`streamcache-rtsp`), the store (`streamcache-cache`) and the daemon speak
//! of time and cache rules in the same types:
//!
//! - [`Npt`]: a position in normal play time (RFC 2326 §3.6), in
//!   nanoseconds; [`NptRange`] (a title's range) and [`NptSpan`] (a stretch
//!   the store holds) are made of it;
//! - [`CacheHeaders`]: the origin's caching headers, verbatim.
//!
//! No I/O, no clocks: plain values. The words are defined in
//! `docs/design/glossary.md`.

mod npt;

pub use npt::{Npt, NptRange, NptSpan, HELD_SLACK};

use serde::{Deserialize, Serialize};

/// The origin's caching headers on DESCRIBE, verbatim (RFC 2326 §12): what
/// the freshness rules read, what the store keeps with a title, and what a
/// conditional DESCRIBE sends back.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheHeaders {
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Expires`.
    pub expires: Option<String>,
}
