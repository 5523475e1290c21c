//! One RTSP connection to the sample origin and its one session.
//!
//! Only what an origin needs to be useful: OPTIONS, DESCRIBE, SETUP (RTP
//! interleaved on the connection: UDP is answered 461, which players and
//! streamcache's own origin client take as "use TCP"), PLAY with a Range on
//! demand, PAUSE, TEARDOWN and keep-alives. On demand each session plays the
//! clip from the store through [`Playback`] (paced, seekable, renumbered,
//! with sender reports and BYE at the end); live sessions forward the shared
//! loop of [`super::live`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use rtsp_types::headers::{self, HeaderName};
use rtsp_types::{Method, Request, Response, StatusCode, Version};
use streamcache_rtsp::codec::{put_interleaved, CodecError, RtspCodec};
use streamcache_rtsp::framing::Frame;
use streamcache_rtsp::range::{NptStart, PlayRange};
use streamcache_rtsp::transport::{self, LowerTransport, TransportSpec};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{Encoder as _, FramedRead};
use tracing::debug;

use super::Sample;
use crate::playback::{Control, Playback, Sink, SinkClosed};

const SERVER: &str = concat!("streamcache-sample/", env!("CARGO_PKG_VERSION"));
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
/// What the session header announces; the connection is closed after twice
/// this without a request (keep-alives and RTCP count).
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Writes queued toward the peer (responses, media batches).
const OUT_QUEUE: usize = 256;
/// A peer that takes no bytes for this long is gone: its connection ends
/// (otherwise a client that stops reading would hold it, and its
/// playback, for ever).
const WRITE_STALL: Duration = Duration::from_secs(10);

/// The two titles of the sample origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Title {
    Vod,
    Live,
}

/// The title and track a request URL names: `/vod`, `/live`, with
/// `/trackID=N` for a track.
fn resolve(path: &str) -> Option<(Title, Option<usize>)> {
    let path = path.trim_end_matches('/');
    let (base, track) = match path.rsplit_once("/trackID=") {
        Some((base, n)) => (base, Some(n.parse().ok()?)),
        None => (path, None),
    };
    let title = match base {
        "/vod" => Title::Vod,
        "/live" => Title::Live,
        _ => return None,
    };
    Some((title, track))
}

struct Session {
    id: String,
    title: Title,
    /// Content base of the title (ends in `/`), for RTP-Info.
    base: String,
    /// Per set-up track: its RTP channel (RTCP is the next one).
    channels: BTreeMap<usize, u8>,
    media: Media,
}

enum Media {
    Idle,
    Vod(mpsc::Sender<Control>),
    Live(JoinHandle<()>),
}

impl Drop for Session {
    fn drop(&mut self) {
        // A store playback ends with its control channel; a live forwarder
        // has none.
        if let Media::Live(task) = &self.media {
            task.abort();
        }
    }
}

/// A response under construction.
struct Reply {
    status: u16,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Work to do once the response is queued (media never precedes it).
enum After {
    Start(mpsc::Sender<Control>),
    Close,
}

struct Connection {
    sample: Arc<Sample>,
    out: mpsc::Sender<Bytes>,
    codec: RtspCodec,
    session: Option<Session>,
}

/// Serves one connection until the peer leaves, errs or goes silent.
pub(super) async fn serve(sample: Arc<Sample>, stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let (out, mut queued) = mpsc::channel::<Bytes>(OUT_QUEUE);
    let mut writer = tokio::spawn(async move {
        while let Some(bytes) = queued.recv().await {
            match tokio::time::timeout(WRITE_STALL, write.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                // Closing the queue ends the session's media too: its
                // sink's next send fails.
                Ok(Err(_)) | Err(_) => return,
            }
        }
    });
    let mut frames = FramedRead::new(read, RtspCodec::default());
    let mut conn = Connection {
        sample,
        out,
        codec: RtspCodec::default(),
        session: None,
    };
    loop {
        let frame = match tokio::time::timeout(2 * SESSION_TIMEOUT, frames.next()).await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        match frame {
            Ok(Frame::Request(request)) => {
                let (reply, after) = conn.handle(&request).await;
                let cseq = request
                    .header(&headers::CSEQ)
                    .map(|v| v.as_str().to_owned());
                if !conn.send(reply, cseq).await {
                    break;
                }
                match after {
                    Some(After::Start(control)) => {
                        let _ = control.send(Control::Start).await;
                    }
                    Some(After::Close) => break,
                    None => {}
                }
            }
            // The peer's RTCP receiver reports, or answers: nothing to do.
            Ok(Frame::Interleaved { .. } | Frame::Response(_)) => {}
            Err(CodecError::Framing { error, cseq }) => {
                debug!(error = %error, "sample origin: unreadable request");
                let reply = Reply::status(error.status()).header(headers::CONNECTION, "close");
                conn.send(reply, cseq.map(|c| c.to_string())).await;
                break;
            }
            Err(CodecError::Io(_)) => break,
        }
    }
    // Ends the session's media; the writer sends what is queued, then
    // stops (a stalled peer within WRITE_STALL per write; never for ever).
    drop(conn);
    if tokio::time::timeout(2 * WRITE_STALL, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

impl Connection {
    async fn send(&mut self, reply: Reply, cseq: Option<String>) -> bool {
        let mut builder = Response::builder(Version::V1_0, StatusCode::from(reply.status))
            .header(headers::SERVER, SERVER);
        if let Some(cseq) = cseq {
            builder = builder.header(headers::CSEQ, cseq);
        }
        for (name, value) in reply.headers {
            builder = builder.header(name, value);
        }
        let response = builder.build(reply.body);
        let mut buf = BytesMut::new();
        if self.codec.encode(&response, &mut buf).is_err() {
            return false;
        }
        self.out.send(buf.freeze()).await.is_ok()
    }

    async fn handle(&mut self, request: &Request<Vec<u8>>) -> (Reply, Option<After>) {
        if request.header(&headers::CSEQ).is_none() {
            return (Reply::status(400), Some(After::Close));
        }
        if *request.method() == Method::Options {
            return (Reply::status(200).header(headers::PUBLIC, PUBLIC), None);
        }
        let Some(url) = request.request_uri() else {
            return (Reply::status(400), None);
        };
        let Some((title, track)) = resolve(url.path()) else {
            return (Reply::status(404), None);
        };
        let base = format!(
            "{}/",
            url.as_str()
                .split("/trackID=")
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
        );
        if let Some(session) = &self.session {
            let named = request.header(&headers::SESSION).map(|v| v.as_str());
            let id = named.and_then(|v| v.split(';').next()).map(str::trim);
            if id.is_some_and(|id| id != session.id) {
                return (Reply::status(454), None);
            }
        }
        match request.method() {
            Method::Describe => (self.describe(title, &base), None),
            Method::Setup => (self.setup(request, title, track, base), None),
            Method::Play => self.play(request, title).await,
            Method::Pause => (self.pause().await, None),
            Method::Teardown => {
                self.session = None;
                (Reply::status(200), Some(After::Close))
            }
            Method::GetParameter | Method::SetParameter => (Reply::status(200), None),
            _ => (Reply::status(405).header(headers::ALLOW, PUBLIC), None),
        }
    }

    fn describe(&self, title: Title, base: &str) -> Reply {
        let mut reply = Reply::status(200)
            .header(headers::CONTENT_TYPE, "application/sdp")
            .header(headers::CONTENT_BASE, base);
        reply.body = self.sample.clip.sdp(title == Title::Live).into_bytes();
        reply
    }

    fn setup(
        &mut self,
        request: &Request<Vec<u8>>,
        title: Title,
        track: Option<usize>,
        base: String,
    ) -> Reply {
        let tracks = self.sample.clip.tracks().len();
        let Some(track) = track.filter(|&t| t < tracks) else {
            return Reply::status(404);
        };
        if self.session.as_ref().is_some_and(|s| s.title != title) {
            return Reply::status(459); // one title per session
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| !matches!(s.media, Media::Idle))
        {
            // Its media already flows with the tracks set up so far.
            return Reply::status(455);
        }
        let offered = request
            .header(&headers::TRANSPORT)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let chosen = transport::choose(&offered, |t| {
            t.lower == LowerTransport::Tcp && !t.multicast && t.destination.is_none()
        });
        let Ok(spec) = chosen else {
            return Reply::status(461);
        };
        let fallback = u8::try_from(2 * track).unwrap_or(0);
        let (rtp, rtcp) = spec.interleaved.unwrap_or((fallback, fallback + 1));
        // A pair of consecutive channels (RTCP on the second); 255 has none
        // after it.
        if rtp == u8::MAX || rtcp != rtp + 1 {
            return Reply::status(461);
        }
        let session = self.session.get_or_insert_with(|| Session {
            id: format!("{:016x}", rand::random::<u64>()),
            title,
            base,
            channels: BTreeMap::new(),
            media: Media::Idle,
        });
        session.channels.insert(track, rtp);
        Reply::status(200)
            .header(
                headers::SESSION,
                format!("{};timeout={}", session.id, SESSION_TIMEOUT.as_secs()),
            )
            .header(
                headers::TRANSPORT,
                TransportSpec::tcp((rtp, rtcp)).to_string(),
            )
    }

    async fn play(&mut self, request: &Request<Vec<u8>>, title: Title) -> (Reply, Option<After>) {
        let sample = Arc::clone(&self.sample);
        let out = self.out.clone();
        let Some(session) = self.session.as_mut().filter(|s| s.title == title) else {
            return (Reply::status(454), None);
        };
        let session_header = format!("{};timeout={}", session.id, SESSION_TIMEOUT.as_secs());
        if title == Title::Live {
            let running = matches!(&session.media, Media::Live(task) if !task.is_finished());
            if !running {
                let feed = sample.live.subscribe();
                let channels = session.channels.clone();
                session.media = Media::Live(tokio::spawn(forward_live(feed, channels, out)));
            }
            let reply = Reply::status(200)
                .header(headers::SESSION, session_header)
                .header(headers::RANGE, "npt=now-");
            return (reply, None);
        }
        let range = match request
            .header(&headers::RANGE)
            .map(|v| PlayRange::parse(v.as_str()))
        {
            None => None,
            Some(Ok(range)) => Some(range),
            Some(Err(_)) => return (Reply::status(457), None),
        };
        let from = range.and_then(|r| match r.start {
            NptStart::At(npt) => Some(npt),
            NptStart::Now => None,
        });
        let until = range.and_then(|r| r.end);
        if from.is_some_and(|from| from > sample.clip.duration) {
            return (Reply::status(457), None);
        }
        let control = match &session.media {
            Media::Vod(control) => control.clone(),
            _ => match start_playback(&sample, &session.channels, out) {
                Ok(control) => {
                    session.media = Media::Vod(control.clone());
                    control
                }
                Err(e) => {
                    debug!(error = %e, "sample origin: cannot play the clip");
                    return (Reply::status(500), None);
                }
            },
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let prepared = match control
            .send(Control::Play {
                from,
                until,
                reply: reply_tx,
            })
            .await
        {
            Ok(()) => reply_rx.await.ok().and_then(Result::ok),
            Err(_) => None,
        };
        let Some(started) = prepared else {
            return (Reply::status(500), None);
        };
        let answered = PlayRange {
            start: NptStart::At(started.npt),
            end: Some(until.unwrap_or(sample.clip.duration)),
        };
        let rtp_info = started
            .rtp_info
            .iter()
            .map(|(track, seq, rtptime)| {
                format!(
                    "url={}trackID={track};seq={seq};rtptime={rtptime}",
                    session.base
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let reply = Reply::status(200)
            .header(headers::SESSION, session_header)
            .header(headers::RANGE, answered.to_string())
            .header(headers::RTP_INFO, rtp_info);
        (reply, Some(After::Start(control)))
    }

    async fn pause(&mut self) -> Reply {
        let Some(session) = self.session.as_mut() else {
            return Reply::status(454);
        };
        match &session.media {
            Media::Vod(control) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                if control
                    .send(Control::Pause { reply: reply_tx })
                    .await
                    .is_ok()
                {
                    let _ = reply_rx.await;
                }
            }
            Media::Live(task) => {
                task.abort();
                session.media = Media::Idle;
            }
            Media::Idle => {}
        }
        Reply::status(200)
    }
}

/// Spawns the session's playback of the clip from the store.
fn start_playback(
    sample: &Sample,
    channels: &BTreeMap<usize, u8>,
    out: mpsc::Sender<Bytes>,
) -> anyhow::Result<mpsc::Sender<Control>> {
    let reader = sample.clip.reader()?;
    let clocks: Vec<(usize, u32)> = sample
        .clip
        .tracks()
        .into_iter()
        .filter(|(track, _)| channels.contains_key(track))
        .collect();
    let sink = ConnSink {
        channels: channels.clone(),
        buf: BytesMut::new(),
        out,
    };
    let playback = Playback::new(reader, &clocks, sink);
    let (control, control_rx) = mpsc::channel(8);
    tokio::spawn(playback.run(control_rx));
    Ok(control)
}

/// Interleaved frames on the connection, one write per batch.
struct ConnSink {
    channels: BTreeMap<usize, u8>,
    buf: BytesMut,
    out: mpsc::Sender<Bytes>,
}

impl Sink for ConnSink {
    fn push(&mut self, track: usize, rtcp: bool, data: &[u8]) {
        if let Some(&rtp) = self.channels.get(&track) {
            // Packets from the store fit a frame; one that does not is left out.
            let _ = put_interleaved(rtp + u8::from(rtcp), data, &mut self.buf);
        }
    }

    async fn flush(&mut self) -> Result<(), SinkClosed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = self.buf.split().freeze();
        self.out.send(batch).await.map_err(|_| SinkClosed)
    }
}

/// Forwards the live loop to one session until it falls behind or leaves.
async fn forward_live(
    mut feed: tokio::sync::broadcast::Receiver<super::live::LivePacket>,
    channels: BTreeMap<usize, u8>,
    out: mpsc::Sender<Bytes>,
) {
    loop {
        let packet = match feed.recv().await {
            Ok(packet) => packet,
            // Fell behind: it goes on with the oldest packet still queued.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(&rtp) = channels.get(&packet.track) else {
            continue;
        };
        let mut frame = BytesMut::with_capacity(packet.data.len() + 4);
        if put_interleaved(rtp, &packet.data, &mut frame).is_err() {
            continue;
        }
        if out.send(frame.freeze()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_title_and_a_track() {
        assert_eq!(resolve("/vod"), Some((Title::Vod, None)));
        assert_eq!(resolve("/vod/"), Some((Title::Vod, None)));
        assert_eq!(resolve("/live/trackID=1"), Some((Title::Live, Some(1))));
        assert_eq!(resolve("/vod/trackID=x"), None);
        assert_eq!(resolve("/other"), None);
        assert_eq!(resolve("/vod/more"), None);
    }
}
