//! streamcache: a caching RTSP streaming proxy, as a library.
//!
//! The binary (`src/main.rs`) is a thin command line over these modules;
//! tests, benches and tools use them directly. The path of a request through
//! the code is described in `docs/design/request-path.md`:
//! [`serve`] (RTSP server for players) → [`catalog`] (URL → presentation,
//! one hub per key) → [`hub`] (one [`origin`] session, fan-out, recording
//! into the `streamcache_cache` store) → [`serve`]'s delivery (to each
//! player) or [`playback`] (from the store). The words used in names are
//! defined in `docs/design/glossary.md`.

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod descriptors;
pub mod freshness;
pub mod hash_password;
pub mod http;
pub mod hub;
pub mod listener;
pub mod master;
pub mod metrics;
pub mod mounts;
pub mod node;
pub mod notify;
pub mod origin;
pub mod playback;
pub mod reload;
pub mod sample;
pub mod serve;
pub mod timing;
pub mod udp_pair;
