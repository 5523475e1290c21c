//! The hub's task: it owns the origin session, stamps, fans out and records
//! every packet, reconnects a live stream that broke (with backoff), and
//! closes the hub once nobody has played it for the linger.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamcache_cache::Store;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::clock::Stamper;
use super::{Cmd, Hub, HubOrigin, HubPacket, HubSettings, Recorder};
use crate::metrics::OriginCounters;
use crate::origin::{Backoff, EndReason, OriginError, OriginEvent, OriginSession, OriginTarget};
use crate::timing::sleep_until_opt;

pub(super) struct Supervisor {
    hub: Arc<Hub>,
    target: OriginTarget,
    store: Store,
    settings: HubSettings,
    stamper: Stamper,
    origin: Option<(OriginSession, mpsc::Receiver<OriginEvent>)>,
    recorder: Option<Recorder>,
    /// The recording was asked for (it may have been refused or stopped).
    started: bool,
    failed: bool,
    backoff: Backoff,
    reconnects_left: u32,
    counters: OriginCounters,
    /// Packets stamped and recorded, to be published as one batch.
    batch: Vec<(HubPacket, Option<u32>)>,
}

/// Most packets already waiting from the origin that go to the players as
/// one batch.
const BATCH_PACKETS: usize = 32;

impl Supervisor {
    pub(super) fn new(
        hub: Arc<Hub>,
        origin: HubOrigin,
        store: Store,
        settings: HubSettings,
    ) -> Supervisor {
        let HubOrigin { target, counters } = origin;
        Supervisor {
            stamper: Stamper::new(&hub.described),
            hub,
            target,
            store,
            settings,
            origin: None,
            recorder: None,
            started: false,
            failed: false,
            backoff: Backoff::default(),
            reconnects_left: settings.reconnect_attempts,
            counters,
            batch: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut players: watch::Receiver<usize>,
    ) {
        // Since when no player has been attached; the hub was just created
        // for a player's DESCRIBE or SETUP (a claim, see `idle_deadline`).
        let mut idle_since = Instant::now();
        let mut linger_until = Some(idle_since);
        let mut reconnect_at: Option<Instant> = None;
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Start(reply)) => {
                        let result = self.ensure_started().await;
                        if let Err(e) = &result {
                            self.counters.failed(e);
                        }
                        let _ = reply.send(result);
                    }
                    Some(Cmd::Stop) => {
                        info!(key = %self.hub.key, "stopped by the operator: closing origin session");
                        break;
                    }
                    None => break,
                },
                event = next_event(&mut self.origin) => {
                    if let Some(reason) = self.on_events(event) {
                        self.origin = None;
                        match self.after_end(reason) {
                            Some(delay) => reconnect_at = Some(Instant::now() + delay),
                            None => break,
                        }
                    }
                }
                changed = players.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let count = *players.borrow_and_update();
                    idle_since = Instant::now();
                    linger_until = (count == 0).then_some(idle_since);
                }
                _ = sleep_until_opt(linger_until) => {
                    if *players.borrow() > 0 {
                        // A player attached while the hub was busy starting
                        // the origin: its change is still to be seen.
                        linger_until = None;
                        continue;
                    }
                    linger_until = self.hub.close_if_idle(idle_since, &self.settings);
                    if linger_until.is_none() {
                        info!(key = %self.hub.key, "no players left: closing origin session");
                        break;
                    }
                }
                _ = sleep_until_opt(reconnect_at) => {
                    reconnect_at = None;
                    if let Err(e) = self.connect().await {
                        warn!(key = %self.hub.key, origin = %self.target.url, error = %e, "origin reconnect failed");
                        match self.after_end(EndReason::Failed(e)) {
                            Some(delay) => reconnect_at = Some(Instant::now() + delay),
                            None => break,
                        }
                    }
                }
            }
        }
        self.shut_down().await;
    }

    async fn ensure_started(&mut self) -> Result<(), OriginError> {
        if self.origin.is_some() || self.started {
            return Ok(());
        }
        self.connect().await?;
        self.started = true;
        self.open_recorder();
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), OriginError> {
        let (session, events) =
            OriginSession::start(&self.target, &self.hub.described, self.hub.start_npt).await?;
        if !self.hub.live {
            self.stamper.anchor_on_demand(session.play_info());
        } else if self.origin.is_none() && self.stamper.continue_live() {
            if let Some(recorder) = &mut self.recorder {
                recorder.mark_discontinuity();
            }
        }
        self.origin = Some((session, events));
        Ok(())
    }

    /// Decides what to do after the origin session ended: `Some(delay)` to
    /// reconnect a live stream after the delay, `None` to close the hub.
    fn after_end(&mut self, reason: EndReason) -> Option<Duration> {
        match reason {
            EndReason::Failed(e) => {
                warn!(key = %self.hub.key, origin = %self.target.url, error = %e, "origin session failed");
                self.counters.failed(&e);
                self.failed = true;
                if self.hub.live && self.reconnects_left > 0 {
                    self.reconnects_left -= 1;
                    return Some(self.backoff.next_delay());
                }
                None
            }
            EndReason::Eof | EndReason::Bye => {
                info!(key = %self.hub.key, "origin ended the stream");
                None
            }
        }
    }

    fn open_recorder(&mut self) {
        if !self.hub.storable {
            info!(key = %self.hub.key, "origin forbids storing this title (private or no-store): relaying only");
            return;
        }
        self.recorder = Recorder::open(
            &self.store,
            &self.hub.key,
            &self.hub.described,
            self.stamper.offset(),
        );
        if self.recorder.is_none() {
            // Refused (logged): the players get the whole fill from the tail.
            self.hub.recording_stopped(Vec::new(), false);
        }
    }

    /// Takes `event` and the events already waiting behind it (up to
    /// [`BATCH_PACKETS`]), and publishes their packets as one batch. Returns
    /// why the origin session ended, if it did.
    fn on_events(&mut self, mut event: OriginEvent) -> Option<EndReason> {
        let mut taken = 0;
        let ended = loop {
            match event {
                OriginEvent::Ended { reason } => break Some(reason),
                OriginEvent::Packet { track, rtcp, data } => self.on_packet(track, rtcp, data),
            }
            taken += 1;
            let waiting = match &mut self.origin {
                Some((_, events)) if taken < BATCH_PACKETS => events.try_recv().ok(),
                _ => None,
            };
            match waiting {
                Some(waiting) => event = waiting,
                None => break None,
            }
        };
        self.publish_batch();
        ended
    }

    fn on_packet(&mut self, track: usize, rtcp: bool, data: Bytes) {
        self.counters.received_bytes.inc_by(data.len() as u64);
        let Some(stamped) = self.stamper.stamp(track, rtcp, data) else {
            return;
        };
        if let Some(recorder) = &mut self.recorder {
            if let Err(stopped) = recorder.record(&stamped) {
                // What the store holds goes out before the tail starts (it
                // must not be kept twice); the tail first, then the seal: a
                // player who sees the store's end must find the tail.
                self.publish_batch();
                self.hub.recording_stopped(stopped.unwritten, stopped.wrote);
                if let Some(recorder) = self.recorder.take() {
                    recorder.finish(true);
                }
            }
        }
        self.batch.push((
            HubPacket {
                track,
                rtcp,
                data: stamped.data,
                npt: stamped.npt,
            },
            stamped.keyframe_ts,
        ));
    }

    fn publish_batch(&mut self) {
        if !self.batch.is_empty() {
            self.hub.publish(std::mem::take(&mut self.batch));
        }
    }

    async fn shut_down(mut self) {
        self.hub.close();
        if let Some((session, _)) = self.origin.take() {
            session.teardown().await;
        }
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(self.failed);
        }
    }
}

async fn next_event(
    origin: &mut Option<(OriginSession, mpsc::Receiver<OriginEvent>)>,
) -> OriginEvent {
    match origin {
        Some((_, events)) => events.recv().await.unwrap_or(OriginEvent::Ended {
            reason: EndReason::Eof,
        }),
        None => std::future::pending().await,
    }
}
