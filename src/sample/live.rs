//! The sample's live stream: the clip played in a loop on the wall clock,
//! one stream for every viewer, as a camera would send it.
//!
//! One task reads the clip, renumbers every packet onto one continuous
//! timeline (each loop's media time follows the last: sequence numbers and
//! RTP times never jump back) and broadcasts it. It runs while somebody
//! watches: the first viewer starts it, and it ends when a packet finds no
//! receiver.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use streamcache_cache::RecordKind;
use streamcache_types::Npt;
use tokio::sync::broadcast;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use super::clip::Clip;
use crate::playback::TrackNumbering;

/// Packets queued toward one viewer: a viewer further behind is dropped.
const QUEUE: usize = 1024;

/// An RTP packet of the live stream, numbered for it.
#[derive(Debug, Clone)]
pub struct LivePacket {
    pub track: usize,
    pub data: Bytes,
}

pub struct Live {
    clip: Arc<Clip>,
    feed: Mutex<Option<broadcast::Sender<LivePacket>>>,
}

impl Live {
    pub fn new(clip: Arc<Clip>) -> Live {
        Live {
            clip,
            feed: Mutex::new(None),
        }
    }

    /// Joins the stream, starting it if nobody watches.
    pub fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<LivePacket> {
        let mut feed = self.feed();
        if let Some(tx) = feed.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(QUEUE);
        *feed = Some(tx.clone());
        tokio::spawn(Arc::clone(self).run(tx));
        rx
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<LivePacket>>> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the stream goes on after a packet found no receiver: a
    /// viewer may have joined since (under the same lock as
    /// [`Live::subscribe`], so none joins a stream that has stopped).
    fn still_watched(&self, tx: &broadcast::Sender<LivePacket>) -> bool {
        let mut feed = self.feed();
        if tx.receiver_count() > 0 {
            return true;
        }
        *feed = None;
        false
    }

    /// Sends the clip in a loop until nobody receives.
    async fn run(self: Arc<Self>, tx: broadcast::Sender<LivePacket>) {
        let clip = Arc::clone(&self.clip);
        let mut numbering: Vec<TrackNumbering> = clip
            .tracks()
            .into_iter()
            .map(|(_, rate)| TrackNumbering::new(rate))
            .collect();
        let started = Instant::now();
        let mut offset = Npt::ZERO;
        loop {
            let reader = match clip.reader() {
                Ok(reader) => reader,
                Err(e) => {
                    warn!(error = %e, "sample live stream stopped");
                    *self.feed() = None;
                    return;
                }
            };
            let mut cursor = reader.cursor();
            loop {
                // Copied out of the mapping before waiting for its due time.
                let (track, npt, mut data) = match cursor.next() {
                    None => break,
                    Some(Err(e)) => {
                        warn!(error = %e, "sample clip record skipped");
                        continue;
                    }
                    Some(Ok(record)) if record.kind == RecordKind::Rtcp => continue,
                    Some(Ok(record)) => (
                        usize::from(record.track),
                        offset.saturating_add(record.media_time),
                        record.payload.to_vec(),
                    ),
                };
                sleep_until(started + npt.as_duration()).await;
                let Some(numbering) = numbering.get_mut(track) else {
                    continue;
                };
                if !numbering.rewrite(&mut data, npt) {
                    continue;
                }
                let packet = LivePacket {
                    track,
                    data: Bytes::from(data),
                };
                if tx.send(packet).is_err() && !self.still_watched(&tx) {
                    debug!("sample live stream: nobody watches, stopping");
                    return;
                }
            }
            offset = offset.saturating_add(clip.duration);
        }
    }
}
