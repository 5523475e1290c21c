//! The recorder: writes a title's stamped packets into the store.
//!
//! A consumer of the stream, not of the origin: it is given [`Stamped`]
//! packets (npt and random-access flag already known) and the title's
//! description, and knows nothing of where they come from, so a recording
//! can be fed by an origin session or by anything else that has the
//! packets. The hub feeds it every packet as it fans it out, synchronously:
//! a recording must not lose a packet to a slow consumer, as a lagging
//! player may.
//!
//! Its policy:
//! - the metadata comes from the description (SDP, cache headers, tracks,
//!   range); a live recording replaces the previous one of the same stream;
//! - a video access unit is held until it is complete (its marker packet, or
//!   the next unit's first packet, arrived), so a recording cut short ends
//!   on a whole frame and a later fill splices cleanly;
//! - the first record of each run is flagged as a discontinuity;
//! - sealed `complete` only when an on-demand title was recorded to its end
//!   without a failure and everything before this run is held (by earlier
//!   runs, see [`NptSpan::held_from_start`]); `partial` otherwise;
//! - a write error (disk full, I/O) stops the recording, not the relay: what
//!   was written stays readable, sealed `partial`.

use std::time::Duration;

use bytes::Bytes;
use streamcache_cache::{
    Metadata, PresentationState, RecordFlags, RecordIn, RecordKind, Store, TrackMeta, Writer,
};
use streamcache_rtsp::rtp::RtpView;
use streamcache_types::{Npt, NptSpan};
use tracing::warn;

use super::clock::Stamped;
use crate::origin::Described;

/// A video packet waiting for the rest of its access unit.
struct HeldPacket {
    data: Bytes,
    timestamp: u32,
    npt: Npt,
    random_access: bool,
}

pub struct Recorder {
    key: String,
    store: Store,
    writer: Option<Writer>,
    /// Per track: whether it is video (its access units are held whole).
    video: Vec<bool>,
    /// Per track: the video access unit being received.
    units: Vec<Vec<HeldPacket>>,
    /// The next record starts a new stretch (a new run, a reconnect).
    discontinuity: bool,
    /// The title's end, for an on-demand title.
    end: Option<Npt>,
    /// Where this run starts in the title.
    run_start: Npt,
    /// The latest npt recorded.
    last: Npt,
}

impl Recorder {
    /// Starts a recording run of `key` from `run_start`: creates the entry
    /// (or a new run of a partial one) with metadata from the description.
    /// `None` (logged) when the store refuses.
    pub fn open(
        store: &Store,
        key: &str,
        described: &Described,
        run_start: Npt,
    ) -> Option<Recorder> {
        let live = described.range.is_none_or(|r| r.end.is_none());
        if live {
            // A live recording is of one origin session; an older one of the
            // same stream is replaced (unless somebody is replaying it).
            let _ = store.purge(key, false);
        }
        let writer = match store.open_writer(key, metadata(key, described)) {
            Ok(writer) => writer,
            Err(e) => {
                warn!(key, error = %e, "not recording this presentation");
                return None;
            }
        };
        let video: Vec<bool> = described
            .tracks
            .iter()
            .map(|t| t.media.eq_ignore_ascii_case("video"))
            .collect();
        Some(Recorder {
            key: key.to_owned(),
            store: store.clone(),
            writer: Some(writer),
            units: video.iter().map(|_| Vec::new()).collect(),
            video,
            // Each recording run starts a new stretch of the title: a player
            // crossing into it must splice, not continue.
            discontinuity: true,
            end: described.range.and_then(|r| r.end),
            run_start,
            last: Npt::ZERO,
        })
    }

    /// The stream is not continuous with what was recorded before (the
    /// origin session was replaced).
    pub fn mark_discontinuity(&mut self) {
        self.discontinuity = true;
    }

    pub fn record(&mut self, packet: &Stamped) {
        if self.writer.is_none() {
            return;
        }
        let track = packet.track;
        self.last = self.last.max(packet.npt);
        let video = self.video.get(track).copied().unwrap_or(false);
        if packet.rtcp || !video {
            self.append(
                track,
                packet.rtcp,
                &packet.data,
                packet.npt,
                packet.random_access,
            );
            return;
        }
        let Ok(rtp) = RtpView::parse(&packet.data) else {
            return;
        };
        let (timestamp, marker) = (rtp.timestamp(), rtp.marker());
        if self.units[track]
            .last()
            .is_some_and(|p| p.timestamp != timestamp)
        {
            self.record_unit(track);
        }
        self.units[track].push(HeldPacket {
            data: packet.data.clone(),
            timestamp,
            npt: packet.npt,
            random_access: packet.random_access,
        });
        if marker {
            self.record_unit(track);
        }
    }

    /// Seals the run: `complete` when it reached the title's end (`failed`
    /// false) and the title is held from its start up to this run's start.
    /// A video access unit still incomplete is left out.
    pub fn finish(mut self, failed: bool) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        const END_SLACK: Duration = Duration::from_secs(1);
        let reached_end = self.end.is_some_and(|end| self.last + END_SLACK >= end);
        let complete = !failed && reached_end && self.held_before(self.run_start);
        let state = if complete {
            PresentationState::Complete
        } else {
            PresentationState::Partial
        };
        if let Err(e) = writer.finish(state) {
            warn!(key = %self.key, error = %e, "could not seal the recording");
        }
    }

    /// True if earlier runs hold the title from its start up to `npt`.
    fn held_before(&self, npt: Npt) -> bool {
        if npt == Npt::ZERO {
            return true;
        }
        let Ok(Some(meta)) = self.store.metadata(&self.key) else {
            return false;
        };
        let start = meta.range.map_or(Npt::ZERO, |r| r.start);
        NptSpan::held_from_start(&meta.spans, start, npt)
    }

    /// Records the held access unit of a video track.
    fn record_unit(&mut self, track: usize) {
        for p in std::mem::take(&mut self.units[track]) {
            self.append(track, false, &p.data, p.npt, p.random_access);
        }
    }

    fn append(&mut self, track: usize, rtcp: bool, data: &[u8], npt: Npt, random_access: bool) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let record = RecordIn {
            track: u8::try_from(track).unwrap_or(u8::MAX),
            kind: if rtcp {
                RecordKind::Rtcp
            } else {
                RecordKind::Rtp
            },
            flags: RecordFlags {
                random_access,
                discontinuity: std::mem::take(&mut self.discontinuity),
            },
            media_time: npt,
            payload: data,
        };
        if let Err(e) = writer.append(&record) {
            // Disk full or an I/O error: stop recording, keep relaying. What
            // was written stays readable.
            warn!(key = %self.key, error = %e, "recording stopped");
            if let Some(writer) = self.writer.take() {
                if let Err(e) = writer.finish(PresentationState::Partial) {
                    warn!(key = %self.key, error = %e, "could not seal the recording");
                }
            }
        }
    }
}

/// The store's metadata of a title, from its description.
fn metadata(key: &str, described: &Described) -> Metadata {
    Metadata {
        key: key.to_owned(),
        sdp: described.sdp_text.clone(),
        cache_headers: described.cache_headers.clone(),
        tracks: described
            .tracks
            .iter()
            .map(|t| TrackMeta {
                control: t.control_url.to_string(),
                payload_type: t.payload_type,
                clock_rate: t.clock_rate,
                media: t.media.clone(),
                encoding: t.encoding.clone(),
            })
            .collect(),
        range: described.range,
        state: PresentationState::Recording,
        spans: Vec::new(),
        // The description is as recent as the recording.
        validated_at_unix_ms: crate::freshness::unix_ms(std::time::SystemTime::now()),
    }
}
