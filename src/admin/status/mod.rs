//! The status page at the admin listener's `/` for browsers, and
//! `GET /api/v1/status`, the little it needs beyond the other endpoints.
//!
//! The page is three static files compiled into the binary (no build step,
//! no CDN): `GET /` with an `Accept` that names `text/html` gets
//! `index.html`, which loads `/status/app.js` and `/status/style.css`; API
//! clients asking `/` for anything else still get the JSON list of
//! endpoints. The files hold no data, so they are served without the admin
//! token: a browser cannot send a bearer token with a page load. The page
//! asks for the token when an API call answers 401, keeps it in
//! `sessionStorage` (gone when the tab closes) and sends it as
//! `Authorization: Bearer` with every `fetch()`.

use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use super::routes::json_response;
use super::Body;
use crate::serve::Server;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The page or one of its files, for a GET or HEAD that asks for one.
pub fn page(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (text, content_type) = match path {
        "/" if wants_html(headers) => (INDEX_HTML, "text/html; charset=utf-8"),
        "/status/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/status/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(http_body_util::Full::new(text.into()));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// Browsers navigating to a page send `Accept: text/html,…`; curl sends
/// `*/*` and API clients `application/json`.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// `GET /api/v1/status`: where viewers play titles over HTTP, cache use,
/// the titles with an origin session now, the cluster when a node.
pub fn status(
    server: &Server,
    viewer: Option<std::net::SocketAddr>,
    cluster: Option<&crate::node::Status>,
) -> Response<Body> {
    let store = server.catalog.store();
    let disk = store.disk_space().ok();
    let mut hubs = server.catalog.hub_keys();
    hubs.sort();
    json_response(
        StatusCode::OK,
        &json!({
            "http": viewer.map(|a| json!({"port": a.port(), "ip": a.ip().to_string()})),
            "cache": {
                "used_bytes": store.used_bytes(),
                "budget_bytes": store.config().budget_bytes,
                "titles": store.list().len(),
                "disk_available_bytes": disk.map(|d| d.available),
            },
            "origin_sessions": hubs,
            "cluster": cluster.map(|c| json!({
                "node_id": c.node_id,
                "master": c.master,
                "connected": c.connected(),
            })),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_page_and_api_clients_the_json() {
        let mut headers = HeaderMap::new();
        assert!(page(&Method::GET, "/", &headers).is_none());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(page(&Method::GET, "/", &headers).is_none());
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        );
        assert!(page(&Method::GET, "/", &headers).is_some());
        assert!(page(&Method::DELETE, "/", &headers).is_none());
        let empty = HeaderMap::new();
        assert!(page(&Method::GET, "/status/app.js", &empty).is_some());
        assert!(page(&Method::GET, "/status/other.js", &empty).is_none());
    }
}
