//! Live HLS: a live title's hub, joined as one more player, cut into a
//! rolling window of fMP4 segments kept in memory.
//!
//! Joining goes through the catalog like an RTSP player's SETUP: the
//! title's existing hub if there is one, so HTTP viewers and RTSP players
//! share the one origin session. One channel per title serves every HTTP
//! viewer; it leaves the hub when no viewer has asked for anything for
//! [`IDLE`] (the hub then lingers and closes as it does for RTSP players).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use streamcache_transcoding::mux::fmp4::{self, Segmenter};
use streamcache_transcoding::title::Frames;
use streamcache_transcoding::{Codec, Frame, TrackSpec};
use streamcache_types::Npt;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::hls::LiveEntry;
use super::Refusal;
use crate::catalog::Catalog;
use crate::cli::export::known;
use crate::hub::{HubPacket, Subscription};
use crate::mounts::Resolved;

/// Segments last at least this long (a segment ends at the first keyframe
/// this far from its start).
const SEGMENT: Npt = Npt::from_secs(2);
/// Segments kept: what a playlist lists.
const WINDOW: usize = 6;
/// Segments a first playlist waits for: players start a few segments from
/// the live edge (ffmpeg three).
const FIRST_PLAYLIST: usize = 3;
/// How long a playlist request waits for them.
const FIRST_WAIT: Duration = Duration::from_secs(30);
/// A channel nobody asked anything of for this long leaves the hub.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Live {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
}

/// One live title's window, shared by its HTTP viewers.
pub struct Channel {
    window: watch::Sender<Window>,
    asked: Mutex<Instant>,
}

#[derive(Default)]
pub struct Window {
    pub init: Option<Bytes>,
    segments: VecDeque<Segment>,
    /// EXT-X-TARGETDURATION: the longest segment so far, whole seconds.
    target: u64,
    ended: bool,
}

struct Segment {
    sequence: u64,
    duration: Npt,
    data: Bytes,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running channel of `key`, if any (segment requests).
    pub fn get(&self, key: &str) -> Option<Arc<Channel>> {
        let channel = self.lock().get(key).cloned()?;
        channel.touch();
        Some(channel)
    }

    /// The channel of a live title, joining its hub if need be; `None` if
    /// the title is not live.
    pub async fn join(
        self: &Arc<Self>,
        catalog: &Arc<Catalog>,
        resolved: &Resolved,
    ) -> Result<Option<Arc<Channel>>, Refusal> {
        if let Some(channel) = self.get(&resolved.key) {
            return Ok(Some(channel));
        }
        let bad_gateway =
            |e: &dyn std::fmt::Display| Refusal::new(StatusCode::BAD_GATEWAY, e.to_string());
        let hub = catalog
            .hub(resolved, None, false)
            .await
            .map_err(|e| bad_gateway(&e))?;
        if !hub.is_live() {
            return Ok(None);
        }
        let specs = TrackSpec::from_sdp(&hub.described().sdp_text).map_err(|e| bad_gateway(&e))?;
        let frames = Frames::new(&specs).map_err(|u| {
            Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("track {}'s codec {} cannot be muxed", u.track, u.encoding),
            )
        })?;
        let mut channels = self.lock();
        if let Some(channel) = channels.get(&resolved.key) {
            // Another viewer joined meanwhile.
            return Ok(Some(Arc::clone(channel)));
        }
        let channel = Arc::new(Channel {
            window: watch::Sender::new(Window::default()),
            asked: Mutex::new(Instant::now()),
        });
        channels.insert(resolved.key.clone(), Arc::clone(&channel));
        drop(channels);
        info!(key = %resolved.key, "HLS: a live title joined");
        let cutter = Cutter {
            frames,
            segmenter: Segmenter::new(specs.iter().position(|s| s.media == "video"), SEGMENT),
            specs,
            mux: None,
            next: 0,
        };
        let (live, key, task_channel) = (
            Arc::downgrade(self),
            resolved.key.clone(),
            Arc::clone(&channel),
        );
        tokio::spawn(async move {
            match hub.play().await {
                Ok(sub) => task_channel.run(sub, cutter).await,
                Err(e) => warn!(%key, error = %e, "HLS: cannot join the live title"),
            }
            task_channel.window.send_modify(|w| w.ended = true);
            forget(&live, &key, &task_channel);
        });
        Ok(Some(channel))
    }
}

fn forget(live: &Weak<Live>, key: &str, channel: &Arc<Channel>) {
    if let Some(live) = live.upgrade() {
        let mut channels = live.lock();
        if channels.get(key).is_some_and(|c| Arc::ptr_eq(c, channel)) {
            channels.remove(key);
        }
    }
}

impl Channel {
    fn touch(&self) {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle(&self) -> bool {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            > IDLE
    }

    /// The playlist, once the window has a few segments.
    pub async fn playlist(&self) -> Result<String, Refusal> {
        let mut rx = self.window.subscribe();
        let ready = |w: &Window| w.segments.len() >= FIRST_PLAYLIST || w.ended;
        let waited = tokio::time::timeout(FIRST_WAIT, rx.wait_for(ready)).await;
        let unavailable = || {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the live title sends nothing",
            )
        };
        let window = match waited {
            Ok(Ok(window)) => window,
            _ => return Err(unavailable()),
        };
        if window.segments.is_empty() {
            return Err(unavailable());
        }
        let entries: Vec<LiveEntry> = window
            .segments
            .iter()
            .map(|s| LiveEntry {
                sequence: s.sequence,
                duration: s.duration,
            })
            .collect();
        Ok(super::hls::live(&entries, window.target))
    }

    pub fn init(&self) -> Option<Bytes> {
        self.window.borrow().init.clone()
    }

    pub fn segment(&self, sequence: u64) -> Option<Bytes> {
        let window = self.window.borrow();
        let segment = window.segments.iter().find(|s| s.sequence == sequence)?;
        Some(segment.data.clone())
    }

    async fn run(&self, sub: Subscription, mut cutter: Cutter) {
        let Subscription {
            backlog, mut rx, ..
        } = sub;
        for packet in backlog {
            cutter.packet(&packet, &self.window);
        }
        let mut check = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(batch) => {
                        for packet in batch.iter() {
                            cutter.packet(packet, &self.window);
                        }
                    }
                    // Frames lost to lag are dropped by the depacketizers.
                    Err(broadcast::error::RecvError::Lagged(n)) => warn!(lost = n, "HLS: the live cutter fell behind"),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = check.tick() => if self.idle() {
                    info!("HLS: no live viewer asked for a while: leaving the title");
                    return;
                },
            }
        }
    }
}

/// Packets in, segments out.
struct Cutter {
    specs: Vec<TrackSpec>,
    frames: Frames,
    segmenter: Segmenter,
    /// The codecs muxed and each track's index among them, fixed at the
    /// first segment (the init segment describes them).
    mux: Option<(Vec<Codec>, Vec<Option<usize>>)>,
    next: u64,
}

impl Cutter {
    fn packet(&mut self, packet: &HubPacket, window: &watch::Sender<Window>) {
        if packet.rtcp {
            return;
        }
        self.frames
            .push(packet.track, &packet.data, packet.npt, false);
        while let Some(frame) = self.frames.pop() {
            let end = frame.pts;
            if let Some(frames) = self.segmenter.push(frame) {
                self.segment(frames, end, window);
            }
        }
    }

    fn segment(&mut self, frames: Vec<Frame>, end: Npt, window: &watch::Sender<Window>) {
        if self.mux.is_none() {
            // Until every codec is known (parameter sets in band) there is
            // no init segment, and what came so far is dropped.
            let Ok(mux) = known(self.frames.codecs(), &self.specs) else {
                return;
            };
            match fmp4::init_segment(&mux.0) {
                Ok(init) => window.send_modify(|w| w.init = Some(init)),
                Err(e) => return warn!(error = %e, "HLS: no init segment for the live title"),
            }
            self.mux = Some(mux);
        }
        let Some((codecs, index)) = &self.mux else {
            return;
        };
        let start = frames.iter().map(|f| f.pts).min().unwrap_or(end);
        let frames: Vec<Frame> = frames
            .into_iter()
            .filter_map(|f| {
                Some(Frame {
                    track: index.get(f.track).copied().flatten()?,
                    ..f
                })
            })
            .collect();
        let sequence = self.next;
        let number = u32::try_from(sequence + 1).unwrap_or(u32::MAX);
        let data = match fmp4::fragment(number, codecs, Npt::ZERO, &frames, Some(end)) {
            Ok(data) => data,
            Err(e) => return warn!(error = %e, "HLS: a live segment could not be muxed"),
        };
        self.next += 1;
        let duration = end.saturating_sub(start);
        window.send_modify(|w| {
            w.target = w
                .target
                .max(duration.as_ns().div_ceil(1_000_000_000).max(1));
            w.segments.push_back(Segment {
                sequence,
                duration,
                data,
            });
            while w.segments.len() > WINDOW {
                w.segments.pop_front();
            }
        });
    }
}
