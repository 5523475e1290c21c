//! DESCRIBE: the presentation's SDP, from the store or the origin, with its
//! control URLs rewritten to the proxy's own (one per track, under the URL
//! the player reached us by).

use std::sync::Arc;

use rtsp_types::headers;
use rtsp_types::{Request, Url};
use streamcache_rtsp::sdp::Sdp;
use tracing::warn;

use super::super::session::Source;
use super::super::Server;
use super::source::source_for;
use super::{resolve, Reply, SERVER};
use crate::mounts::{track_suffix, Resolved};

pub(super) async fn describe(server: &Arc<Server>, request: &Request<Vec<u8>>) -> Reply {
    let (url, resolved) = match resolve(server, request) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let source = match source_for(server, request, &resolved).await {
        Ok(source) => source,
        Err(reply) => return reply,
    };
    let sdp_text = match &source {
        Source::Hub(hub) => hub.described().sdp_text.as_str(),
        Source::Cache(title) => title.metadata.sdp.as_str(),
    };
    let base = presentation_url(&url, &resolved);
    let sdp = match Sdp::parse(sdp_text) {
        Ok(sdp) => sdp,
        Err(e) => {
            warn!(origin = %resolved.origin_url, error = %e, "origin SDP does not parse");
            return Reply::status(502);
        }
    };
    let controls: Vec<String> = (0..sdp.media.len())
        .map(|i| format!("{base}/{}", track_suffix(i)))
        .collect();
    let body = sdp.rewrite_controls(None, &controls);
    let mut reply = Reply::ok()
        .header(headers::CONTENT_TYPE, "application/sdp")
        .header(headers::CONTENT_BASE, format!("{base}/"))
        .header(
            headers::VIA,
            format!("RTSP/1.0 {}", SERVER.replace('/', "-")),
        );
    reply.body = body.into_bytes();
    reply
}

/// The presentation's URL as this player reaches the proxy.
fn presentation_url(request_url: &Url, resolved: &Resolved) -> String {
    let host = request_url.host_str().unwrap_or("localhost");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = request_url
        .port()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!("rtsp://{host}{port}{}", resolved.presentation_path)
}
