//! Revalidation of a stored title by a conditional DESCRIBE (RFC 2326
//! §12.23, HTTP/1.1 conditional requests).
//!
//! The request carries `If-Modified-Since` with the stored `Last-Modified`
//! (and `If-None-Match` with the stored `ETag`). The title is unchanged if
//! the origin answers 304, or answers 200 with the same `Last-Modified` and
//! `ETag` as stored, or — when it sends neither — with the same SDP (the
//! `o=` line's session id aside: servers such as gst-rtsp-server make a new
//! one per DESCRIBE; its version still counts).

use streamcache_rtsp::rtsp_types::{headers, HeaderName, Method, Response, StatusCode};
use tracing::info;

use super::conn::{Connection, Req};
use super::{described_from, CacheHeaders, Described, OriginError, OriginTarget};

/// What a stored title looks like, to compare the origin's answer with.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The cache headers stored with the title.
    pub cache_headers: &'a CacheHeaders,
    /// The SDP stored with the title.
    pub sdp_text: &'a str,
}

/// The origin's verdict on a stored title.
#[derive(Debug, Clone)]
pub enum Revalidation {
    /// The stored title is still current; these cache headers replace the
    /// stored ones (a 304 updates only the headers it carries).
    NotModified(CacheHeaders),
    /// The title changed: its new description.
    Changed(Box<Described>),
}

/// Asks the origin whether `stored` is still the title at `t`.
pub async fn revalidate(t: &OriginTarget, stored: Stored<'_>) -> Result<Revalidation, OriginError> {
    let mut conn = Connection::connect(t).await?;
    let mut req = Req::new(Method::Describe, &t.url).header(headers::ACCEPT, "application/sdp");
    if let Some(lm) = &stored.cache_headers.last_modified {
        req = req.header(headers::IF_MODIFIED_SINCE, lm.as_str());
    }
    if let (Some(etag), Ok(name)) = (
        &stored.cache_headers.etag,
        HeaderName::from_static_str("If-None-Match"),
    ) {
        req = req.header(name, etag.as_str());
    }
    let resp = conn.request(&req, |_, _| {}).await?;
    let verdict = if resp.status() == StatusCode::NotModified {
        Revalidation::NotModified(merged(stored.cache_headers, &headers_of(&resp)))
    } else {
        let resp = conn.expect_success(&req.method, resp)?;
        let described = described_from(conn.origin(), &t.url, &resp)?;
        if unchanged(stored, &described) {
            Revalidation::NotModified(described.cache_headers)
        } else {
            Revalidation::Changed(Box::new(described))
        }
    };
    info!(
        origin = conn.origin(),
        changed = matches!(verdict, Revalidation::Changed(_)),
        "revalidated"
    );
    Ok(verdict)
}

/// The cache headers of a response.
pub(super) fn headers_of(resp: &Response<Vec<u8>>) -> CacheHeaders {
    let header = |name: &HeaderName| resp.header(name).map(|v| v.as_str().to_owned());
    CacheHeaders {
        last_modified: header(&headers::LAST_MODIFIED),
        etag: HeaderName::from_static_str("ETag")
            .ok()
            .and_then(|n| header(&n)),
        cache_control: header(&headers::CACHE_CONTROL),
        expires: header(&headers::EXPIRES),
    }
}

/// Stored headers updated with those a 304 carries.
fn merged(stored: &CacheHeaders, update: &CacheHeaders) -> CacheHeaders {
    let pick = |new: &Option<String>, old: &Option<String>| new.clone().or_else(|| old.clone());
    CacheHeaders {
        last_modified: pick(&update.last_modified, &stored.last_modified),
        etag: pick(&update.etag, &stored.etag),
        cache_control: pick(&update.cache_control, &stored.cache_control),
        expires: pick(&update.expires, &stored.expires),
    }
}

/// Whether a full DESCRIBE answer describes the stored title.
fn unchanged(stored: Stored<'_>, new: &Described) -> bool {
    let new_h = &new.cache_headers;
    if new_h.last_modified.is_some() || new_h.etag.is_some() {
        new_h.last_modified == stored.cache_headers.last_modified
            && new_h.etag == stored.cache_headers.etag
    } else {
        same_sdp(stored.sdp_text, &new.sdp_text)
    }
}

/// SDP equality up to what names the sending session rather than the
/// content: the `o=` line's session id and `a=ssrc:` source attributes
/// (RFC 5576), which gst-rtsp-server draws anew for every on-demand pipeline.
pub fn same_sdp(a: &str, b: &str) -> bool {
    fn lines(sdp: &str) -> impl Iterator<Item = String> + '_ {
        sdp.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with("a=ssrc:"))
            .map(|l| {
                match l.strip_prefix("o=") {
                    // o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>
                    Some(origin) => {
                        let mut fields: Vec<&str> = origin.split_whitespace().collect();
                        if let Some(id) = fields.get_mut(1) {
                            *id = "";
                        }
                        format!("o={}", fields.join(" "))
                    }
                    None => l.to_owned(),
                }
            })
    }
    lines(a).eq(lines(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_equality_ignores_only_what_names_the_session() {
        let a = "v=0\r\no=- 111 1 IN IP4 1.2.3.4\r\ns=x\r\nm=video 0 RTP/AVP 96\r\n";
        let b = "v=0\r\no=- 222 1 IN IP4 1.2.3.4\r\ns=x\r\nm=video 0 RTP/AVP 96\r\n";
        let newer = "v=0\r\no=- 222 2 IN IP4 1.2.3.4\r\ns=x\r\nm=video 0 RTP/AVP 96\r\n";
        let other = "v=0\r\no=- 111 1 IN IP4 1.2.3.4\r\ns=x\r\nm=audio 0 RTP/AVP 96\r\n";
        assert!(same_sdp(a, b));
        assert!(same_sdp(a, &a.replace("\r\n", "\n")));
        assert!(!same_sdp(a, newer));
        assert!(!same_sdp(a, other));
        let with_ssrc = |ssrc: &str| format!("{a}a=ssrc:{ssrc} cname:user@host\r\n");
        assert!(same_sdp(&with_ssrc("1"), &with_ssrc("2")));
    }

    #[test]
    fn a_304_updates_only_the_headers_it_carries() {
        let stored = CacheHeaders {
            last_modified: Some("lm".into()),
            etag: Some("\"e\"".into()),
            cache_control: Some("max-age=1".into()),
            expires: None,
        };
        let update = CacheHeaders {
            cache_control: Some("max-age=9".into()),
            ..CacheHeaders::default()
        };
        let m = merged(&stored, &update);
        assert_eq!(m.cache_control.as_deref(), Some("max-age=9"));
        assert_eq!(m.etag, stored.etag);
        assert_eq!(m.last_modified, stored.last_modified);
    }
}
