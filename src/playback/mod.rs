//! Playback of a cached presentation to one player.
//!
//! A playback task owns a store cursor. On PLAY it seeks (for a Range) to the
//! random-access record at or before the requested npt, anchors the
//! [`Schedule`] there, and from then on sends every record that is due —
//! renumbered for this player ([`TrackNumbering`]) — in one batch to its
//! [`Sink`], then sleeps until the next record is due. PAUSE stops the clock
//! and keeps the cursor where it is, so PLAY without a Range resumes there
//! with the sequence numbers continuing. While the presentation is still being
//! recorded the cursor follows the writer (live tail); if that recording
//! stopped short (disk full), playback goes on at the store's end from the
//! fill's [`Tail`] (the origin's packets the store lacks, stamped with their
//! npt), paced and renumbered the same way. Every second it sends
//! an RTCP sender report per track mapping wall-clock (NTP) time to the RTP
//! time it is sending, so players keep audio and video in sync. Shortly after
//! the last packet (`BYE_DELAY`) it sends RTCP BYE on every track.

mod renumber;
mod schedule;
#[doc(hidden)]
pub mod synthetic;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamcache_cache::{CacheError, Cursor, Reader, RecordKind};
use streamcache_rtsp::rtp::{self, SenderReport};
use streamcache_types::Npt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::hub::{Hub, TailCursor, TailRead};
use crate::timing::{sleep_until_opt, WriteTicks};

pub use renumber::TrackNumbering;
pub use schedule::Schedule;

/// Where playback puts its packets: a player's TCP connection or UDP ports.
pub trait Sink: Send {
    /// Queues one packet of a track. The sink copies what it keeps (into its
    /// batch), so playback reuses one buffer for every packet and allocates
    /// nothing per packet.
    fn push(&mut self, track: usize, rtcp: bool, data: &[u8]);
    /// Sends what is queued as one write (TCP) or one batch of datagrams.
    /// An error means the player is gone or too slow: playback ends.
    fn flush(&mut self) -> impl std::future::Future<Output = Result<(), SinkClosed>> + Send;
}

/// The sink cannot take more: the player is gone or too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// What the player asked for.
pub enum Control {
    /// Prepares to play: `from` seeks first; `until` stops at that npt. The
    /// clock starts with [`Control::Start`], once the PLAY response is on its
    /// way (media must not overtake it).
    Play {
        from: Option<Npt>,
        until: Option<Npt>,
        reply: oneshot::Sender<Result<Started, CacheError>>,
    },
    Start,
    Pause {
        reply: oneshot::Sender<()>,
    },
}

/// What a PLAY response needs to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// npt of the first record that will be sent (the random-access point at
    /// or before the requested position).
    pub npt: Npt,
    /// Per track: (track, sequence number of its next packet, RTP time of `npt`).
    pub rtp_info: Vec<(usize, u16, u32)>,
}

/// Why playback ended. Reaching the end of the presentation is not an end:
/// the player gets BYE and may still seek back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The sink refused packets: the player is gone or too slow.
    SinkClosed,
    /// The control channel was dropped (the session ended).
    Stopped,
}

/// A record read ahead of its due time; its bytes, copied out of the
/// mapping, are in [`Playback::packet`].
struct Pending {
    track: usize,
    rtcp: bool,
    npt: Npt,
}

/// Most packets sent in one batch, so a long-paused player's backlog (or a
/// seek's burst) does not become one giant write.
const BATCH_PACKETS: usize = 512;
/// How often a caught-up cursor looks again for records the writer added.
const TAIL_POLL: Duration = Duration::from_millis(20);
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The most sent at once ahead of the first keyframe on a PLAY from the
/// start (see [`Playback::first_keyframe_lead`]).
const MAX_LEAD: Npt = Npt::from_millis(500);
/// How long after the last packet the BYE follows. Sent at once, a UDP
/// player can read the BYE (RTCP port) before the last packets (RTP port)
/// and stop without them: ffmpeg lost the title's last audio frame so.
const BYE_DELAY: Duration = Duration::from_millis(200);

pub struct Playback<S: Sink> {
    /// Keeps the presentation pinned against eviction; gives a fresh cursor
    /// for a PLAY from the very start.
    reader: Reader,
    cursor: Cursor,
    sink: S,
    tracks: BTreeMap<usize, TrackNumbering>,
    schedule: Schedule,
    pending: Option<Pending>,
    /// The pending packet's bytes. One buffer, reused: it is swapped with
    /// `last_sent`'s once sent, so no packet costs an allocation.
    packet: Vec<u8>,
    until: Option<Npt>,
    /// npt where playback stands while paused.
    position: Npt,
    /// How far past `position` the clock starts on the next start: a PLAY
    /// from the very start sends what precedes the first keyframe (audio
    /// recorded ahead of it) at once, and the keyframe without waiting.
    lead: Npt,
    next_report: Instant,
    /// Everything was sent: when the BYE goes.
    bye_at: Option<Instant>,
    /// Per track, the last packet sent (npt, bytes), to splice runs.
    last_sent: BTreeMap<usize, (Npt, Vec<u8>)>,
    /// Joining recording runs (and the tail) to what was already sent.
    splice: Splice,
    /// The hub filling the store, whose tail follows the store's end.
    fill: Option<Arc<Hub>>,
    /// Reading the fill's tail, past the store's end.
    feed: Option<TailCursor>,
    /// The tail is over (or lost): nothing more to send.
    feed_over: bool,
    /// Merged writes: the ticks sends wait for.
    ticks: WriteTicks,
}

/// Splicing recording runs. An interrupted recording and the fill that
/// completed it both hold the packets around the point where they meet (the
/// origin starts a Range PLAY at the keyframe before it). The origin sends
/// the same bytes both times, but may anchor npt differently on each PLAY,
/// so runs are joined by content: in the new run, each track skips up to the
/// packet whose payload equals the last one sent, and its later packets are
/// shifted by the npt difference found there. A match is looked for within
/// this distance of the last packet's npt; a new run that shows none within
/// it did not overlap, and plays as it is.
const SPLICE_WINDOW: Npt = Npt::from_millis(500);

/// Joining a recording run to what the player already got (see
/// [`SPLICE_WINDOW`]).
#[derive(Default)]
struct Splice {
    /// Per track, while crossing into a run that overlaps what was already
    /// sent: the packet to find again in the new run.
    find: BTreeMap<usize, (Npt, Vec<u8>)>,
    /// Per track, what to add to the npt of the current run's records to
    /// continue the previous run's timeline.
    shift_ns: BTreeMap<usize, i128>,
}

impl Splice {
    /// Crossing into a new run, after `last_sent` (per track).
    fn crossing(last_sent: &BTreeMap<usize, (Npt, Vec<u8>)>) -> Splice {
        Splice {
            find: last_sent.clone(),
            shift_ns: BTreeMap::new(),
        }
    }

    /// The npt a packet of `track` at `npt` is sent at, or `None` while it
    /// is one the player already got.
    fn admit(&mut self, track: usize, mut npt: Npt, payload: &[u8]) -> Option<Npt> {
        if let Some((sent_npt, sent)) = self.find.get(&track) {
            if npt <= sent_npt.saturating_add(SPLICE_WINDOW) {
                // RTP headers differ between runs; payloads do not. Far
                // earlier look-alikes (a repeating audio frame) are not the
                // place.
                if npt.as_ns().abs_diff(sent_npt.as_ns()) <= SPLICE_WINDOW.as_ns()
                    && payload.get(12..) == sent.get(12..)
                {
                    let shift = i128::from(sent_npt.as_ns()) - i128::from(npt.as_ns());
                    self.shift_ns.insert(track, shift);
                    self.find.remove(&track);
                }
                return None; // the player has it already
            }
            self.find.remove(&track);
        }
        if let Some(shift) = self.shift_ns.get(&track) {
            let shifted = (i128::from(npt.as_ns()) + shift).max(0);
            npt = Npt::from_ns(u64::try_from(shifted).unwrap_or(u64::MAX));
        }
        Some(npt)
    }
}

impl<S: Sink> Playback<S> {
    /// `tracks`: the set-up tracks with their clock rates.
    pub fn new(reader: Reader, tracks: &[(usize, u32)], sink: S) -> Playback<S> {
        let cursor = reader.cursor();
        Playback {
            reader,
            cursor,
            sink,
            tracks: tracks
                .iter()
                .map(|&(track, rate)| (track, TrackNumbering::new(rate)))
                .collect(),
            schedule: Schedule::default(),
            pending: None,
            packet: Vec::new(),
            until: None,
            position: Npt::ZERO,
            lead: Npt::ZERO,
            next_report: Instant::now(),
            bye_at: None,
            last_sent: BTreeMap::new(),
            splice: Splice::default(),
            fill: None,
            feed: None,
            feed_over: false,
            ticks: WriteTicks::OFF,
        }
    }

    /// Sends on `ticks` (everything due by a tick in one write) instead of
    /// at every due time.
    pub fn merge_writes(mut self, ticks: WriteTicks) -> Playback<S> {
        self.ticks = ticks;
        self
    }

    /// Plays a title `hub` is filling: at the store's end, goes on from the
    /// hub's tail if its recording stopped short.
    pub fn follow(mut self, hub: Arc<Hub>) -> Playback<S> {
        self.fill = Some(hub);
        self
    }

    /// Runs until the sink closes or the control channel is dropped.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) -> Ended {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                ctl = control.recv() => match ctl {
                    Some(Control::Play { from, until, reply }) => {
                        let _ = reply.send(self.prepare(from, until));
                    }
                    Some(Control::Start) => self.start(),
                    Some(Control::Pause { reply }) => {
                        self.pause();
                        let _ = reply.send(());
                    }
                    None => return Ended::Stopped,
                },
                _ = sleep_until_opt(wake) => {
                    let sent = if self.bye_at.is_some() {
                        self.at_end().await
                    } else {
                        match self.send_due().await {
                            Ok(true) => Ok(()),
                            Ok(false) => {
                                self.bye_at = Some(Instant::now() + BYE_DELAY);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    };
                    if sent.is_err() {
                        return Ended::SinkClosed;
                    }
                }
            }
        }
    }

    fn prepare(&mut self, from: Option<Npt>, until: Option<Npt>) -> Result<Started, CacheError> {
        self.pause();
        if let Some(from) = from {
            if from == Npt::ZERO {
                // From the start means every record, also those recorded
                // before the first random-access point (audio that arrived
                // ahead of the first keyframe), which an index seek skips.
                self.cursor = self.reader.cursor();
            } else {
                self.cursor.seek(from)?;
            }
            self.pending = None;
            self.position = from;
            self.splice = Splice::default();
            // Back in the store; its end leads to the tail again.
            self.feed = None;
            self.feed_over = false;
        }
        self.until = until;
        // The first record decides where time starts: the keyframe before a
        // seek target, or wherever the cursor stood.
        self.read_ahead();
        let start = self.pending.as_ref().map_or(self.position, |p| p.npt);
        self.position = start;
        self.lead = match from {
            Some(Npt::ZERO) => self.first_keyframe_lead(start),
            _ => Npt::ZERO,
        };
        let rtp_info = self
            .tracks
            .iter()
            .map(|(&track, n)| (track, n.next_seq(), n.rtp_time(start)))
            .collect();
        Ok(Started {
            npt: start,
            rtp_info,
        })
    }

    fn start(&mut self) {
        let now = Instant::now();
        self.schedule
            .play(now, self.position.saturating_add(self.lead));
        self.lead = Npt::ZERO;
        self.next_report = now;
    }

    /// How far the title's first keyframe is past `start`, when it is near
    /// enough (`MAX_LEAD`) to send what precedes it as one burst.
    fn first_keyframe_lead(&self, start: Npt) -> Npt {
        match self.reader.first_random_access_point() {
            Some(keyframe) if keyframe > start && keyframe.saturating_sub(start) <= MAX_LEAD => {
                keyframe.saturating_sub(start)
            }
            _ => Npt::ZERO,
        }
    }

    fn pause(&mut self) {
        if let Some(npt) = self.schedule.npt_at(Instant::now()) {
            // Resume where the next unsent packet is, or where the clock stood.
            self.position = self.pending.as_ref().map_or(npt, |p| p.npt.min(npt));
        }
        self.schedule.pause();
        self.bye_at = None;
    }

    /// When the task must wake to send: the pending record's due time, a
    /// report, or a tail poll (on the next write tick when merging). `None`
    /// while paused.
    fn next_wake(&self) -> Option<Instant> {
        if !self.schedule.is_running() {
            return None;
        }
        if let Some(bye_at) = self.bye_at {
            return Some(bye_at);
        }
        let now = Instant::now();
        let data = match &self.pending {
            Some(p) => self.schedule.due(p.npt)?,
            None => now + TAIL_POLL,
        };
        Some(self.ticks.wake_at(data.min(self.next_report), now))
    }

    /// Reads the next record the player gets into `pending`: from the
    /// store, then (past its end) from the fill's tail.
    fn read_ahead(&mut self) {
        while self.pending.is_none() {
            if self.feed.is_some() {
                if !self.read_feed() {
                    return;
                }
                continue;
            }
            match self.cursor.next() {
                None => {
                    if !self.enter_feed() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    // Skipped; the cursor moves past it. The store logs
                    // each damaged segment once (every player would
                    // otherwise repeat it) and counts every record.
                    debug!(error = %e, "corrupt record skipped in playback");
                }
                Some(Ok(record)) => {
                    if record.flags.discontinuity {
                        // Crossing into another recording run (whatever
                        // its first record is).
                        self.splice = Splice::crossing(&self.last_sent);
                    }
                    let track = usize::from(record.track);
                    if record.kind == RecordKind::Rtcp {
                        continue; // the origin's reports: we send our own
                    }
                    if !self.tracks.contains_key(&track) {
                        continue; // a track this player did not set up
                    }
                    if let Some(npt) = self.splice.admit(track, record.media_time, record.payload) {
                        self.packet.clear();
                        self.packet.extend_from_slice(record.payload);
                        self.pending = Some(Pending {
                            track,
                            rtcp: false,
                            npt,
                        });
                    }
                }
            }
        }
    }

    /// At the store's end: whether playback goes on from the fill's tail
    /// (the recording is over and stopped short). Entering it crosses into
    /// another run when the tail does not continue the store's last records.
    fn enter_feed(&mut self) -> bool {
        if self.feed_over || !self.cursor.is_complete() {
            return false;
        }
        let Some(tail) = self.fill.as_ref().and_then(|hub| hub.tail()) else {
            return false;
        };
        if !tail.continues_store() {
            self.splice = Splice::crossing(&self.last_sent);
        }
        self.feed = Some(tail.cursor());
        true
    }

    /// Reads the tail's next packet; false when there is none (yet).
    fn read_feed(&mut self) -> bool {
        let Some(feed) = self.feed.as_mut() else {
            return false;
        };
        let packet = match feed.read() {
            TailRead::Packet(packet) => packet,
            TailRead::Wait => return false,
            TailRead::End => {
                self.feed_over = true;
                return false;
            }
            TailRead::Lost => {
                warn!(
                    "playback fell too far behind the origin after the recording stopped: ending"
                );
                self.feed_over = true;
                return false;
            }
        };
        if packet.rtcp || !self.tracks.contains_key(&packet.track) {
            return true;
        }
        if let Some(npt) = self.splice.admit(packet.track, packet.npt, &packet.data) {
            self.packet.clear();
            self.packet.extend_from_slice(&packet.data);
            self.pending = Some(Pending {
                track: packet.track,
                rtcp: false,
                npt,
            });
        }
        true
    }

    /// Sends every due packet (and a report if one is due). `Ok(false)` when
    /// the presentation is over.
    async fn send_due(&mut self) -> Result<bool, SinkClosed> {
        let now = Instant::now();
        let mut sent = 0;
        while sent < BATCH_PACKETS {
            self.read_ahead();
            let Some(pending) = self.pending.as_ref() else {
                break;
            };
            if self.until.is_some_and(|until| pending.npt >= until) {
                // The Range's end: stop the clock there, as after a PAUSE.
                self.position = pending.npt;
                self.schedule.pause();
                break;
            }
            if self.schedule.due(pending.npt).is_none_or(|due| due > now) {
                break;
            }
            let Some(p) = self.pending.take() else {
                break;
            };
            if let Some(numbering) = self.tracks.get_mut(&p.track) {
                if numbering.rewrite(&mut self.packet, p.npt) {
                    self.sink.push(p.track, p.rtcp, &self.packet);
                    // Kept for splicing by swapping buffers, not copying:
                    // the previous last packet's buffer takes the next one.
                    let last = self
                        .last_sent
                        .entry(p.track)
                        .or_insert_with(|| (p.npt, Vec::new()));
                    last.0 = p.npt;
                    std::mem::swap(&mut last.1, &mut self.packet);
                    sent += 1;
                }
            }
        }
        if now >= self.next_report {
            self.push_reports(now);
            self.next_report = now + REPORT_INTERVAL;
        }
        self.sink.flush().await?;
        let over = self.pending.is_none() && self.is_over();
        Ok(!over)
    }

    /// Nothing more will come: the store is read to its end and no tail
    /// follows, or the tail is over.
    fn is_over(&self) -> bool {
        match &self.feed {
            Some(_) => self.feed_over,
            None => {
                self.cursor.is_complete()
                    && (self.feed_over || self.fill.as_ref().is_none_or(|hub| hub.tail().is_none()))
            }
        }
    }

    fn push_reports(&mut self, now: Instant) {
        let Some(npt) = self.schedule.npt_at(now) else {
            return;
        };
        let ntp = rtp::ntp_timestamp(SystemTime::now());
        let reports: Vec<(usize, Vec<u8>)> = self
            .tracks
            .iter()
            .filter(|(_, n)| n.packets > 0)
            .map(|(&track, n)| {
                let sr = SenderReport {
                    ssrc: n.ssrc,
                    ntp,
                    rtp_time: n.rtp_time(npt),
                    packet_count: n.packets,
                    octet_count: n.octets,
                };
                (track, rtp::build_sender_report(&sr, "streamcache"))
            })
            .collect();
        for (track, report) in reports {
            self.sink.push(track, true, &report);
        }
    }

    /// Everything was sent: BYE on every track, and the clock stops (a
    /// later PLAY with a Range may still seek back).
    async fn at_end(&mut self) -> Result<(), SinkClosed> {
        let byes: Vec<(usize, Vec<u8>)> = self
            .tracks
            .iter()
            .map(|(&track, n)| (track, rtp::build_bye(n.ssrc)))
            .collect();
        for (track, bye) in byes {
            self.sink.push(track, true, &bye);
        }
        if let Some(npt) = self.schedule.npt_at(Instant::now()) {
            self.position = npt;
        }
        self.schedule.pause();
        self.bye_at = None;
        self.sink.flush().await
    }
}

#[cfg(test)]
mod tests;
