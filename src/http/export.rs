//! `…/export.mp4[?from=NPT&to=NPT]`: a stored title as an MP4 with the
//! moov first, streamed while it is written.
//!
//! The same two passes as `streamcache cache export` (the moov needs every
//! frame's size before the first byte of media): the first, before the
//! answer, also decides its status (404, 416 for a span the cache does not
//! hold, 415 for a codec MP4 cannot hold) and gives the exact
//! `Content-Length`; the second writes into the body through a bounded
//! channel, at the pace the viewer reads.

use std::io;

use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{Response, StatusCode};
use indicatif::ProgressBar;
use streamcache_cache::Store;
use streamcache_transcoding::mux::mp4::Mp4Plan;
use streamcache_transcoding::mux::FrameHeader;
use streamcache_transcoding::title::Frames;
use streamcache_transcoding::{Frame, TrackSpec};
use streamcache_types::Npt;
use tokio::sync::oneshot;
use tracing::debug;

use super::body::{self, Body, ChannelWriter};
use super::title::mux_refusal;
use super::Refusal;
use crate::cli::export::{check_held, known, pass, track_specs, wanted, Cut};

/// `from` and `to` from a query (`?from=10&to=0:01:30.5`: npt).
fn span(query: Option<&str>) -> Result<(Option<Npt>, Option<Npt>), Refusal> {
    let (mut from, mut to) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let npt = || {
            Npt::parse(&value).ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name}={value} is not an npt (seconds or h:mm:ss)"),
                )
            })
        };
        match name.as_ref() {
            "from" => from = Some(npt()?),
            "to" => to = Some(npt()?),
            other => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter `{other}`"),
                ))
            }
        }
    }
    Ok((from, to))
}

pub async fn respond(store: Store, key: String, query: Option<&str>) -> Response<Body> {
    let (from, to) = match span(query) {
        Ok(span) => span,
        Err(refusal) => return refusal.response(),
    };
    let (ready, answer) = oneshot::channel();
    let (writer, body) = body::channel();
    tokio::task::spawn_blocking(move || export(&store, &key, from, to, ready, writer));
    match answer.await {
        Ok(Ok(length)) => {
            let mut response = Response::new(http_body_util::BodyExt::boxed(body));
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("video/mp4"),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            response
        }
        Ok(Err(refusal)) => refusal.response(),
        Err(_) => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "the export failed").response(),
    }
}

/// The first pass's result: what the second writes.
struct Prepared {
    plan: Mp4Plan,
    specs: Vec<TrackSpec>,
    index: Vec<Option<usize>>,
    cut: Cut,
}

fn export(
    store: &Store,
    key: &str,
    from: Option<Npt>,
    to: Option<Npt>,
    ready: oneshot::Sender<Result<u64, Refusal>>,
    writer: ChannelWriter,
) {
    let Some(reader) = store.open_reader(key).ok().flatten() else {
        let _ = ready.send(Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("{key} is not in the cache"),
        )));
        return;
    };
    let prepared = (|| {
        let meta = reader.metadata().clone();
        let want = wanted(&meta, from, to);
        check_held(&meta.spans, want)
            .map_err(|e| Refusal::new(StatusCode::RANGE_NOT_SATISFIABLE, format!("{key}: {e}")))?;
        let specs = track_specs(&meta)
            .map_err(|e| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{key}: {e:#}")))?;
        if let Err(u) = Frames::new(&specs) {
            let message = format!(
                "track {}'s codec {} cannot be muxed into MP4",
                u.track, u.encoding
            );
            return Err(Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
        }
        let cut = Cut { from, to: want.end };
        let mut headers = Vec::new();
        let codecs = pass(&reader, &specs, &cut, &ProgressBar::hidden(), |f| {
            headers.push(FrameHeader::from(f))
        })
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{key}: {e:#}")))?;
        let (codecs, index) = known(codecs, &specs)
            .map_err(|e| Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{key}: {e}")))?;
        if headers.is_empty() {
            return Err(Refusal::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{key}: no frames in the span asked for"),
            ));
        }
        headers
            .iter_mut()
            .for_each(|h| h.track = index[h.track].unwrap_or(h.track));
        let plan = Mp4Plan::new(&codecs, headers).map_err(mux_refusal)?;
        Ok(Prepared {
            plan,
            specs,
            index,
            cut,
        })
    })();
    let prepared = match prepared {
        Ok(p) => p,
        Err(refusal) => {
            let _ = ready.send(Err(refusal));
            return;
        }
    };
    if ready.send(Ok(prepared.plan.total_size())).is_err() {
        return;
    }
    let Prepared {
        plan,
        specs,
        index,
        cut,
    } = prepared;
    let mut mp4 = match plan.writer(writer) {
        Ok(w) => w,
        Err(e) => return debug!(key, error = %e, "export.mp4 cut short"),
    };
    let mut failed = None;
    let written = pass(
        &reader,
        &specs,
        &cut,
        &ProgressBar::hidden(),
        |f: &Frame| {
            if let (Some(track), None) = (index[f.track], &failed) {
                failed = mp4.write_frame(&Frame { track, ..f.clone() }).err();
            }
        },
    );
    // A frame that differs from the first pass (the title was repaired in
    // between) or a read error: cut the body, so the viewer does not take
    // a short file for a whole one.
    let problem = match (written, failed) {
        (Err(e), _) => Some(format!("{e:#}")),
        (_, Some(e)) => Some(e.to_string()),
        _ => None,
    };
    match (problem, mp4.finish()) {
        (None, Ok(mut writer)) => {
            let _ = io::Write::flush(&mut writer);
        }
        (Some(problem), Ok(writer)) => {
            debug!(key, problem, "export.mp4 cut short");
            writer.fail(io::Error::other(problem));
        }
        (_, Err(e)) => debug!(key, error = %e, "export.mp4 cut short"),
    }
}
