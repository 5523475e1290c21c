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
//! - a write error (disk full, I/O) stops the recording, not the fill: the
//!   error is logged once, and the packets given but not written are handed
//!   back ([`Stopped`]) for the hub to keep for the players; the hub then
//!   seals what was written `partial` ([`Recorder::finish`]).

use std::time::Duration;

use bytes::Bytes;
use streamcache_cache::{
    CacheError, Metadata, PresentationState, RecordFlags, RecordIn, RecordKind, Store, TrackMeta,
    Writer,
};
use streamcache_rtsp::rtp::RtpView;
use streamcache_types::{Npt, NptSpan};
use tracing::warn;

use super::clock::Stamped;
use super::HubPacket;
use crate::origin::Described;

/// Largest video access unit held back whole (a 4K keyframe is a few MB).
const MAX_HELD_UNIT_BYTES: usize = 16 << 20;

/// A video packet waiting for the rest of its access unit.
struct HeldPacket {
    data: Bytes,
    timestamp: u32,
    npt: Npt,
    random_access: bool,
}

/// The recording stopped at a write error.
pub struct Stopped {
    /// The packets given before the failing one that did not reach the
    /// store (video access units held whole), per track in order.
    pub unwritten: Vec<HubPacket>,
    /// This run wrote something: the store's last records are the
    /// packets just before `unwritten`.
    pub wrote: bool,
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
    /// A record was written in this run.
    wrote: bool,
    /// A write failed: nothing more is recorded, and the run is partial.
    stopped: bool,
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
            wrote: false,
            stopped: false,
        })
    }

    /// The stream is not continuous with what was recorded before (the
    /// origin session was replaced).
    pub fn mark_discontinuity(&mut self) {
        self.discontinuity = true;
    }

    /// Records a packet, or tells that the recording stopped at it (logged
    /// here, once). The packet itself is not in [`Stopped::unwritten`]:
    /// the caller has it.
    pub fn record(&mut self, packet: &Stamped) -> Result<(), Stopped> {
        if self.stopped || self.writer.is_none() {
            return Ok(());
        }
        let track = packet.track;
        self.last = self.last.max(packet.npt);
        let video = self.video.get(track).copied().unwrap_or(false);
        if packet.rtcp || !video {
            let written = self.append(
                track,
                packet.rtcp,
                &packet.data,
                packet.npt,
                packet.random_access,
            );
            return written.map_err(|e| self.stop(&e, Vec::new()));
        }
        let Ok(rtp) = RtpView::parse(&packet.data) else {
            return Ok(());
        };
        let (timestamp, marker) = (rtp.timestamp(), rtp.marker());
        if self.units[track]
            .last()
            .is_some_and(|p| p.timestamp != timestamp)
        {
            self.record_unit(track)?;
        }
        self.units[track].push(HeldPacket {
            data: packet.data.clone(),
            timestamp,
            npt: packet.npt,
            random_access: packet.random_access,
        });
        // A unit is written once complete, or once it is this large: an
        // origin that never marks the end of a frame must not grow it
        // without bound.
        let held: usize = self.units[track].iter().map(|p| p.data.len()).sum();
        if marker || held > MAX_HELD_UNIT_BYTES {
            if let Err(mut stopped) = self.record_unit(track) {
                // The failing unit's rest comes last; its last packet is
                // this one.
                stopped.unwritten.pop();
                return Err(stopped);
            }
        }
        Ok(())
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
        let complete = !failed && !self.stopped && reached_end && self.held_before(self.run_start);
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
    fn record_unit(&mut self, track: usize) -> Result<(), Stopped> {
        let mut unit = std::mem::take(&mut self.units[track]).into_iter();
        while let Some(p) = unit.next() {
            if let Err(e) = self.append(track, false, &p.data, p.npt, p.random_access) {
                let rest = std::iter::once(p).chain(unit).map(|p| held(track, p));
                return Err(self.stop(&e, rest.collect()));
            }
        }
        Ok(())
    }

    /// Stops recording after `e`: logs it (the one line for this fill) and
    /// gathers what was not written, the failing unit's `rest` last.
    fn stop(&mut self, e: &CacheError, rest: Vec<HubPacket>) -> Stopped {
        warn!(key = %self.key, error = %e, "recording stopped: the players of this fill get the rest from the origin; the store keeps what it holds as partial");
        // Nothing more is recorded; `finish` seals what was written.
        self.stopped = true;
        let mut unwritten = Vec::new();
        for (track, unit) in self.units.iter_mut().enumerate() {
            unwritten.extend(std::mem::take(unit).into_iter().map(|p| held(track, p)));
        }
        unwritten.extend(rest);
        Stopped {
            unwritten,
            wrote: self.wrote,
        }
    }

    fn append(
        &mut self,
        track: usize,
        rtcp: bool,
        data: &[u8],
        npt: Npt,
        random_access: bool,
    ) -> Result<(), CacheError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
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
                discontinuity: self.discontinuity,
            },
            media_time: npt,
            payload: data,
        };
        writer.append(&record)?;
        self.discontinuity = false;
        self.wrote = true;
        Ok(())
    }
}

/// A held video packet as the hub fans it out.
fn held(track: usize, p: HeldPacket) -> HubPacket {
    HubPacket {
        track,
        rtcp: false,
        data: p.data,
        npt: p.npt,
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
