//! How a player's session relates to the cache, for its log lines: where
//! the catalog sent it (see `crate::catalog`) and why.

use std::fmt;

use super::session::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// The store held the whole title: played without the origin.
    Hit,
    /// The store held the start of the title: the origin fills the rest.
    Partial,
    /// Not stored: fetched from the origin (and stored while played).
    Miss,
    /// A live stream: relayed from the origin's hub.
    Live,
    /// Served from the origin without the store: the player asked for
    /// `Cache-Control: no-cache`, or the origin forbids storing the title.
    Bypass,
}

impl CacheStatus {
    /// The status of a session on `source`; `no_cache` when the player's
    /// request carried `Cache-Control: no-cache`.
    pub fn of(source: &Source, no_cache: bool) -> CacheStatus {
        match source {
            Source::Cache(_) => CacheStatus::Hit,
            Source::Hub(hub) if hub.is_live() => CacheStatus::Live,
            Source::Hub(_) if no_cache => CacheStatus::Bypass,
            Source::Hub(hub) if hub.relays_to_players() => CacheStatus::Bypass,
            Source::Hub(hub) if hub.fills_from().is_some() => CacheStatus::Partial,
            Source::Hub(_) => CacheStatus::Miss,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Partial => "partial",
            CacheStatus::Miss => "miss",
            CacheStatus::Live => "live",
            CacheStatus::Bypass => "bypass",
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
