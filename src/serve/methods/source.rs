//! Where a new session's media comes from: the store or the origin's hub,
//! as the player's `Cache-Control` and the origin's cache rules allow.
//! DESCRIBE and the first SETUP of a session ask; later SETUPs reuse the
//! session's source.

use std::sync::Arc;

use rtsp_types::headers;
use rtsp_types::{Method, Request};
use tracing::warn;

use super::super::session::Source;
use super::super::Server;
use super::Reply;
use crate::catalog::Lookup;
use crate::metrics::LookupOutcome;
use crate::mounts::Resolved;
use crate::origin::OriginError;

/// A player's `Cache-Control` request directives that change where a
/// presentation comes from (RFC 2326 §12.8).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PlayerCacheControl {
    /// Go to the origin even if the store holds the title.
    pub(super) no_cache: bool,
    /// Never go to the origin: 504 when the store does not hold the title.
    pub(super) only_if_cached: bool,
}

impl PlayerCacheControl {
    pub(super) fn of(request: &Request<Vec<u8>>) -> PlayerCacheControl {
        let mut cc = PlayerCacheControl::default();
        if let Some(value) = request.header(&headers::CACHE_CONTROL) {
            for directive in value.as_str().split(',') {
                match directive.trim().to_ascii_lowercase().as_str() {
                    "no-cache" => cc.no_cache = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Why a title has no source.
enum NoSource {
    /// Not served from the store and the origin may not be asked (the
    /// player said `only-if-cached`), or stale, its rules forbid serving it
    /// unvalidated, and the origin cannot be reached.
    Unavailable,
    /// The origin failed.
    Origin(OriginError),
}

/// Where a new session's media comes from: the store when it holds the
/// whole title, the origin's cache rules let it be served (revalidating it
/// if stale) and the player allows it; otherwise the origin's hub.
pub(super) async fn source_for(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    resolved: &Resolved,
) -> Result<Source, Reply> {
    // A SETUP's hub waits for the player's PLAY; a DESCRIBE's need not.
    let claim = request.method() == Method::Setup;
    let cc = PlayerCacheControl::of(request);
    find_source(server, resolved, cc, claim)
        .await
        .map_err(|e| match e {
            NoSource::Unavailable => Reply::status(504),
            NoSource::Origin(e) => Reply::status(e.rtsp_status()),
        })
}

/// Gets a title ready for a player the cluster's master is about to send
/// here, as that player's DESCRIBE would: nothing to do when the store may
/// serve it, otherwise the origin's hub is started (or joined); a new hub
/// lingers until a player claims it. The error is said to the master.
pub(crate) async fn prepare(server: &Arc<Server>, resolved: &Resolved) -> Result<(), String> {
    match find_source(server, resolved, PlayerCacheControl::default(), false).await {
        Ok(_) => Ok(()),
        Err(NoSource::Unavailable) => {
            Err("the stored title is stale and its origin cannot revalidate it".into())
        }
        Err(NoSource::Origin(e)) => Err(e.to_string()),
    }
}

async fn find_source(
    server: &Arc<Server>,
    resolved: &Resolved,
    cc: PlayerCacheControl,
    claim: bool,
) -> Result<Source, NoSource> {
    let described = if cc.no_cache {
        server.metrics.lookup(LookupOutcome::Bypass);
        None
    } else {
        match server.catalog.lookup(resolved, cc.only_if_cached).await {
            Lookup::Hit(title) => {
                server.seen.note(&resolved.mount, &resolved.key, false);
                return Ok(Source::Cache(title));
            }
            Lookup::Unavailable => return Err(NoSource::Unavailable),
            Lookup::Miss(described) => described,
        }
    };
    if cc.only_if_cached {
        return Err(NoSource::Unavailable);
    }
    match server.catalog.hub(resolved, described, claim).await {
        Ok(hub) => {
            server
                .seen
                .note(&resolved.mount, &resolved.key, hub.is_live());
            Ok(Source::Hub(hub))
        }
        Err(e) => {
            warn!(mount = %resolved.mount.path, origin = %resolved.origin_url, error = %e, "origin request failed");
            Err(NoSource::Origin(e))
        }
    }
}
