//! A viewer's request: which title and resource it names, whether the
//! mount lets the viewer in, and the answer.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use streamcache_rtsp::auth::{AuthRequest, Verdict};
use tracing::debug;

use super::body::{self, Body};
use super::{export, hls, Refusal, Viewer};
use crate::catalog::Lookup;
use crate::mounts::{presentation_key, Mount, Resolved};

const M3U8: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";

/// What a path names under its title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Playlist,
    Init,
    Segment(usize),
    LiveInit,
    LiveSegment(u64),
    Export,
}

/// Splits `/a/b/seg/3.m4s` into the title's path and what it asks of it.
fn parse(path: &str) -> Option<(&str, Resource)> {
    let (head, last) = path.rsplit_once('/')?;
    let number = || last.strip_suffix(".m4s")?.parse::<u64>().ok();
    let (title, resource) = match last {
        "index.m3u8" => (head, Resource::Playlist),
        "init.mp4" => match head.strip_suffix("/live") {
            Some(title) => (title, Resource::LiveInit),
            None => (head, Resource::Init),
        },
        "export.mp4" => (head, Resource::Export),
        _ => {
            let (title, kind) = head.rsplit_once('/')?;
            match kind {
                "seg" => (title, Resource::Segment(usize::try_from(number()?).ok()?)),
                "live" => (title, Resource::LiveSegment(number()?)),
                _ => return None,
            }
        }
    };
    (!title.is_empty()).then_some((title, resource))
}

/// What a request is about: a mount's title, or a stored title by id.
enum Target {
    Mount(Resolved),
    Stored { key: String, mount: Mount },
}

pub async fn handle(
    viewer: &Arc<Viewer>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let mut response = answer(viewer, &request, peer).await;
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if request.method() == Method::OPTIONS {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Range"),
        );
    }
    response
}

async fn answer(
    viewer: &Arc<Viewer>,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => {
            let mut response = body::text(String::new());
            *response.status_mut() = StatusCode::NO_CONTENT;
            return response;
        }
        _ => {
            let mut response =
                Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only").response();
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
            return response;
        }
    }
    let path = request.uri().path();
    let not_found = || Refusal::new(StatusCode::NOT_FOUND, format!("nothing at {path}")).response();
    let Some((title, resource)) = parse(path) else {
        return not_found();
    };
    let target = match target(viewer, title) {
        Ok(target) => target,
        Err(refusal) => return refusal.response(),
    };
    let mount = match &target {
        Target::Mount(resolved) => &resolved.mount,
        Target::Stored { mount, .. } => mount,
    };
    if let Err(challenges) = authorize(viewer, request, mount, peer) {
        let mut response =
            Refusal::new(StatusCode::UNAUTHORIZED, "authentication required").response();
        for challenge in challenges {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().append(WWW_AUTHENTICATE, value);
            }
        }
        return response;
    }
    match serve(viewer, target, resource, request.uri().query()).await {
        Ok(response) => response,
        Err(refusal) => {
            debug!(%peer, path, status = %refusal.status, message = %refusal.message, "HTTP viewer refused");
            refusal.response()
        }
    }
}

fn target(viewer: &Viewer, title: &str) -> Result<Target, Refusal> {
    let mounts = viewer.server.mounts();
    if let Some(id) = title.strip_prefix("/by-id/") {
        let unknown = || {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no stored title has the id {id}"),
            )
        };
        let key = viewer
            .server
            .catalog
            .store()
            .resolve(id)
            .ok_or_else(unknown)?;
        // The title is reached through the mount that serves its key, with
        // that mount's accounts; a title no mount serves any more is
        // served to no one.
        let mount = mounts
            .iter()
            .find(|m| serves(m, &key))
            .cloned()
            .ok_or_else(unknown)?;
        return Ok(Target::Stored { key, mount });
    }
    mounts
        .resolve(title)
        .map(Target::Mount)
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, format!("no mount serves {title}")))
}

/// Whether `key` lies under the mount's origin prefix.
fn serves(mount: &Mount, key: &str) -> bool {
    let prefix = presentation_key(&mount.origin);
    key.strip_prefix(prefix.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
}

fn authorize(
    viewer: &Viewer,
    request: &Request<Incoming>,
    mount: &Mount,
    peer: SocketAddr,
) -> Result<(), Vec<String>> {
    let Some(guard) = &mount.player_auth else {
        return Ok(());
    };
    let uri = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let client = peer.ip().to_string();
    let verdict = guard.check(
        &viewer.nonces,
        AuthRequest {
            authorization: request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            method: request.method().as_str(),
            uri,
            client: &client,
            now: viewer.epoch.elapsed().as_secs(),
        },
    );
    match verdict {
        Verdict::Allowed(_) => Ok(()),
        Verdict::Refused { challenges, .. } => Err(challenges),
    }
}

async fn serve(
    viewer: &Arc<Viewer>,
    target: Target,
    resource: Resource,
    query: Option<&str>,
) -> Result<Response<Body>, Refusal> {
    let store = viewer.server.catalog.store().clone();
    let key = match &target {
        Target::Mount(resolved) => resolved.key.clone(),
        Target::Stored { key, .. } => key.clone(),
    };
    let no_store = |mut r: Response<Body>| {
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    };
    match resource {
        Resource::Export => Ok(export::respond(store, key, query).await),
        Resource::LiveInit | Resource::LiveSegment(_) => {
            let gone = || {
                Refusal::new(
                    StatusCode::NOT_FOUND,
                    format!("{key} is not being played live over HTTP"),
                )
            };
            let channel = viewer.live.get(&key).ok_or_else(gone)?;
            let data = match resource {
                Resource::LiveSegment(n) => channel.segment(n),
                _ => channel.init(),
            };
            Ok(body::bytes(data.ok_or_else(gone)?, MP4))
        }
        Resource::Playlist => {
            if let Target::Mount(resolved) = &target {
                // A live title already followed answers at once (and its
                // refreshes, every couple of seconds, are no cache lookups).
                if let Some(channel) = viewer.live.get(&key) {
                    return Ok(no_store(body::bytes(
                        channel.playlist().await?.into(),
                        M3U8,
                    )));
                }
                if !cached(viewer, resolved).await {
                    let channel = viewer.live.join(&viewer.server.catalog, resolved).await?;
                    let Some(channel) = channel else {
                        return Err(Refusal::new(
                            StatusCode::NOT_FOUND,
                            format!("{key} is on demand and not (yet) complete in the cache: play it once through RTSP"),
                        ));
                    };
                    return Ok(no_store(body::bytes(
                        channel.playlist().await?.into(),
                        M3U8,
                    )));
                }
            }
            let plan = viewer.vod.plan(&store, &key).await?;
            Ok(body::bytes(hls::vod(&plan).into(), M3U8))
        }
        Resource::Init => Ok(body::bytes(
            viewer.vod.plan(&store, &key).await?.init.clone(),
            MP4,
        )),
        Resource::Segment(n) => {
            let plan = viewer.vod.plan(&store, &key).await?;
            Ok(body::bytes(viewer.vod.segment(&store, plan, n).await?, MP4))
        }
    }
}

/// Whether the store may serve the title as it is (complete and fresh, or
/// revalidated), as the catalog decides for an RTSP player.
async fn cached(viewer: &Viewer, resolved: &Resolved) -> bool {
    matches!(
        viewer.server.catalog.lookup(resolved, false).await,
        Lookup::Hit(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_title_and_a_resource() {
        assert_eq!(
            parse("/vod/a/index.m3u8"),
            Some(("/vod/a", Resource::Playlist))
        );
        assert_eq!(parse("/vod/init.mp4"), Some(("/vod", Resource::Init)));
        assert_eq!(
            parse("/vod/seg/12.m4s"),
            Some(("/vod", Resource::Segment(12)))
        );
        assert_eq!(
            parse("/live/live/init.mp4"),
            Some(("/live", Resource::LiveInit))
        );
        assert_eq!(
            parse("/live/live/7.m4s"),
            Some(("/live", Resource::LiveSegment(7)))
        );
        assert_eq!(
            parse("/by-id/00ab/export.mp4"),
            Some(("/by-id/00ab", Resource::Export))
        );
        assert_eq!(parse("/index.m3u8"), None);
        assert_eq!(parse("/vod/seg/x.m4s"), None);
        assert_eq!(parse("/vod/other.mp4"), None);
        assert_eq!(parse("/vod/a/b.m4s"), None);
    }
}
