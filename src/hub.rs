//! The hub: one origin session per presentation, however many players.
//!
//! A hub is created when a presentation is first described and lives until
//! its last player has been gone for the configured linger (or the origin
//! ends for good); a hub created for a player's DESCRIBE or SETUP, or
//! handed to its SETUP, also waits for that player's PLAY (see
//! [`idle_deadline`]). Its task owns the
//! origin session and the store writer; for every packet from the origin it
//!
//! 1. records it in the store (`cache/`), with its media time and whether it
//!    is a random-access point;
//! 2. keeps it in the *GOP buffer* — everything since the latest video
//!    random-access point — so that a player joining late starts with a
//!    keyframe and its parameter sets instead of waiting up to a GOP;
//! 3. broadcasts it to the players.
//!
//! Fan-out is a `tokio::sync::broadcast` channel of reference-counted packets:
//! one copy of each packet however many players. The channel's capacity is the
//! per-player queue bound; a player that falls that far behind sees `Lagged`
//! and is dropped by its forwarder, and never slows the hub or anyone else.
//! The GOP buffer and the broadcast are updated under one lock, so that a
//! joining player's backlog and its receiver neither overlap nor leave a gap.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use streamcache_cache::{
    CacheHeaders as StoreCacheHeaders, Metadata, NptRange, PresentationState, RecordFlags,
    RecordIn, RecordKind, Store, TrackMeta, Writer,
};
use streamcache_rtsp::rtp::{self, Codec, RtpView};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics::OriginCounters;
use crate::origin::{
    Backoff, Described, EndReason, OriginError, OriginEvent, OriginSession, OriginTarget,
};
use crate::timing::{secs_to_ns, sleep_until_opt};

/// A packet as the hub fans it out. Cloning is cheap (`Bytes`).
#[derive(Debug, Clone)]
pub struct HubPacket {
    /// Index into the presentation's track list.
    pub track: usize,
    pub rtcp: bool,
    pub data: Bytes,
}

/// Why a player cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the presentation has ended")]
    Closed,
    #[error(transparent)]
    Origin(#[from] OriginError),
}

impl HubError {
    /// The RTSP status to answer a player with.
    pub fn rtsp_status(&self) -> u16 {
        match self {
            HubError::Closed => 503,
            HubError::Origin(e) => e.rtsp_status(),
        }
    }
}

/// Settings a hub needs beyond its origin.
#[derive(Debug, Clone, Copy)]
pub struct HubSettings {
    pub queue_packets: usize,
    pub linger: Duration,
    pub reconnect_attempts: u32,
    /// Upper bound of the GOP buffer; a stream without keyframes this often
    /// just gives late joiners no backlog.
    pub gop_max_bytes: usize,
    /// How long a hub created for a player (DESCRIBE, SETUP) or handed to
    /// its SETUP waits for that player's PLAY, whatever the linger: the player session timeout, as
    /// long as a player may take between requests.
    pub setup_grace: Duration,
}

/// The origin a hub's session goes to, and the counters of its traffic
/// and failures (labelled with the mount, never the origin URL).
pub struct HubOrigin {
    pub target: OriginTarget,
    pub counters: OriginCounters,
}

pub struct Hub {
    key: String,
    described: Described,
    live: bool,
    /// Where an on-demand fill starts (the first npt the store lacks).
    start_npt: Option<f64>,
    /// The origin allows a shared cache to store the title (not `private`
    /// nor `no-store`).
    storable: bool,
    shared: Mutex<Shared>,
    players: watch::Sender<usize>,
    cmd: mpsc::Sender<Cmd>,
}

#[derive(Default)]
struct Shared {
    gop: Vec<HubPacket>,
    gop_bytes: usize,
    /// RTP timestamp of the access unit that opened the GOP buffer.
    gop_ts: Option<u32>,
    closed: bool,
    /// The fan-out. Dropped when the hub closes, so that every player's
    /// receiver sees the end (and gets its RTCP BYE) even while sessions
    /// still hold the hub.
    tx: Option<broadcast::Sender<HubPacket>>,
    /// When the hub was last handed to a player that has yet to PLAY
    /// ([`Hub::claim`] by a SETUP, and its creation).
    claimed_at: Option<Instant>,
    /// When a player last attached (PLAY).
    attached_at: Option<Instant>,
}

enum Cmd {
    Start(oneshot::Sender<Result<(), OriginError>>),
    /// End now, players or not (the operator purged the title or removed
    /// its mount).
    Stop,
}

/// A player attached to a hub: the backlog to send first, then the live feed.
/// Dropping it detaches the player.
pub struct Subscription {
    pub backlog: Vec<HubPacket>,
    pub rx: broadcast::Receiver<HubPacket>,
    _guard: PlayerGuard,
}

/// Counts a player of the hub while it lives.
pub struct PlayerGuard(Arc<Hub>);

impl Drop for PlayerGuard {
    fn drop(&mut self) {
        self.0.players.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Hub {
    /// Creates the hub and its task. `on_close` runs once when it ends.
    pub fn spawn(
        key: String,
        origin: HubOrigin,
        described: Described,
        start_npt: Option<f64>,
        store: Store,
        settings: HubSettings,
        on_close: Box<dyn FnOnce() + Send>,
    ) -> Arc<Hub> {
        let HubOrigin { target, counters } = origin;
        let (tx, _) = broadcast::channel(settings.queue_packets.max(16));
        let (players, players_rx) = watch::channel(0);
        let (cmd, cmd_rx) = mpsc::channel(16);
        let live = described.range.and_then(|(_, end)| end).is_none();
        let storable = crate::freshness::CacheControl::storable(
            described.cache_headers.cache_control.as_deref(),
        );
        let hub = Arc::new(Hub {
            key,
            described,
            live,
            start_npt: start_npt.filter(|&s| s > 0.0 && !live),
            storable,
            shared: Mutex::new(Shared {
                tx: Some(tx),
                // Created for a player's DESCRIBE or SETUP.
                claimed_at: Some(Instant::now()),
                ..Shared::default()
            }),
            players,
            cmd,
        });
        let task = HubTask::new(Arc::clone(&hub), target, store, settings, counters);
        tokio::spawn(async move {
            task.run(cmd_rx, players_rx).await;
            on_close();
        });
        hub
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn described(&self) -> &Described {
        &self.described
    }

    /// Hands the hub to a player's SETUP, so that it waits for that
    /// player's PLAY (see [`idle_deadline`]); false if it cannot be joined.
    pub fn claim(&self) -> bool {
        let mut shared = self.lock();
        let joinable = self.can_join(&shared);
        if joinable {
            shared.claimed_at = Some(Instant::now());
        }
        joinable
    }

    /// Whether the hub can be joined, without making it wait for anyone: for
    /// a DESCRIBE, which a player or a monitoring probe may send without
    /// ever playing (repeated, it would keep the origin session open after
    /// the last player). A player's SETUP then claims the hub, or gets a new
    /// one if this one has closed meanwhile.
    pub fn joinable(&self) -> bool {
        self.can_join(&self.lock())
    }

    /// Every player of a presentation shares its hub: live players through
    /// the broadcast, on-demand players through the store the hub fills. An
    /// on-demand title that may not be stored is relayed to one player per
    /// origin session (a later player would join it mid-title).
    fn can_join(&self, shared: &Shared) -> bool {
        !shared.closed && (self.live || self.storable || *self.players.borrow() == 0)
    }

    /// True when players get the origin's packets through the broadcast
    /// (live, or an on-demand title the store may not keep); otherwise
    /// they play the recording the hub fills.
    pub fn relays_to_players(&self) -> bool {
        self.live || !self.storable
    }

    /// Where an on-demand fill starts when the store already held the
    /// title's beginning (a partial title); `None` for a fill from the start.
    pub fn fills_from(&self) -> Option<f64> {
        self.start_npt
    }

    /// True unless the origin announced a finite range (an on-demand title).
    pub fn is_live(&self) -> bool {
        self.live
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Attaches a player and makes sure the origin session runs. The player
    /// is subscribed before the origin is asked to PLAY, so the first player
    /// of a title receives it from its first packet.
    pub async fn play(self: &Arc<Self>) -> Result<Subscription, HubError> {
        let sub = self.subscribe()?;
        self.start().await?;
        Ok(sub)
    }

    /// Keeps the origin session of an on-demand title running (filling the
    /// store) while the returned guard lives; the player reads the store.
    pub async fn hold(self: &Arc<Self>) -> Result<PlayerGuard, HubError> {
        let guard = {
            let mut shared = self.lock();
            if shared.closed {
                return Err(HubError::Closed);
            }
            self.guard(&mut shared)
        };
        self.start().await?;
        Ok(guard)
    }

    async fn start(&self) -> Result<(), HubError> {
        let (reply, answer) = oneshot::channel();
        self.cmd
            .send(Cmd::Start(reply))
            .await
            .map_err(|_| HubError::Closed)?;
        answer.await.map_err(|_| HubError::Closed)??;
        Ok(())
    }

    /// Ends the hub without waiting for its players to leave: the origin
    /// session closes, the recording is sealed, players see the end.
    pub fn stop(&self) {
        if self.cmd.try_send(Cmd::Stop).is_err() {
            let cmd = self.cmd.clone();
            tokio::spawn(async move {
                let _ = cmd.send(Cmd::Stop).await;
            });
        }
    }

    /// Counts a player in; called with the shared state locked.
    fn guard(self: &Arc<Self>, shared: &mut Shared) -> PlayerGuard {
        shared.attached_at = Some(Instant::now());
        self.players.send_modify(|n| *n += 1);
        PlayerGuard(Arc::clone(self))
    }

    fn subscribe(self: &Arc<Self>) -> Result<Subscription, HubError> {
        let mut shared = self.lock();
        let rx = match (&shared.tx, shared.closed) {
            (Some(tx), false) => tx.subscribe(),
            _ => return Err(HubError::Closed),
        };
        Ok(Subscription {
            backlog: shared.gop.clone(),
            rx,
            _guard: self.guard(&mut shared),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock leaves only a GOP buffer behind;
        // carrying on with it is safe.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a packet: GOP buffer and broadcast under one lock.
    fn publish(&self, packet: HubPacket, random_access_ts: Option<u32>, gop_max_bytes: usize) {
        let mut shared = self.lock();
        if let Some(ts) = random_access_ts {
            if shared.gop_ts != Some(ts) {
                shared.gop.clear();
                shared.gop_bytes = 0;
                shared.gop_ts = Some(ts);
            }
        }
        if shared.gop_ts.is_some() {
            if shared.gop_bytes + packet.data.len() > gop_max_bytes {
                shared.gop.clear();
                shared.gop_bytes = 0;
                shared.gop_ts = None;
            } else {
                shared.gop_bytes += packet.data.len();
                shared.gop.push(packet.clone());
            }
        }
        // No receivers is fine: the hub lingers with nobody watching.
        if let Some(tx) = &shared.tx {
            let _ = tx.send(packet);
        }
    }

    /// Closes the hub if, with no player attached since `idle_since`, its
    /// [`idle_deadline`] has passed; otherwise returns that deadline. Under
    /// the lock that [`Hub::claim`] takes and under which players attach,
    /// so that no player is handed a hub that is closing, nor a hub closed
    /// under a player that has just attached (whose count change the task
    /// has yet to see: it then stops waiting for the deadline).
    fn close_if_idle(&self, idle_since: Instant, settings: &HubSettings) -> Option<Instant> {
        let mut shared = self.lock();
        let deadline = idle_deadline(
            idle_since,
            shared.claimed_at,
            shared.attached_at,
            settings.linger,
            settings.setup_grace,
        );
        if deadline > Instant::now() || *self.players.borrow() > 0 {
            return Some(deadline);
        }
        shared.closed = true;
        None
    }

    fn close(&self) {
        let mut shared = self.lock();
        shared.closed = true;
        shared.gop.clear();
        shared.tx = None;
    }
}

/// Per-track state for turning RTP timestamps into media time.
struct TrackClock {
    codec: Codec,
    video: bool,
    clock_rate: u32,
    base: Option<u32>,
    /// Last timestamp extended to 64 bits, to carry across 32-bit wrap.
    last_ext: Option<i64>,
    /// `base` came from the origin's RTP-Info and is checked against the
    /// first packet (see [`TrackClock::npt_ns`]).
    check_base: bool,
    /// Timestamp of the last access unit that was a random-access point.
    last_rap_ts: Option<u32>,
    /// Video: the access unit being received, recorded once complete (its
    /// marker packet, or the next unit's first packet, arrived). A recording
    /// cut short thus ends on a whole frame, and a later fill splices cleanly.
    unit: Vec<HeldPacket>,
}

/// A video packet waiting for the rest of its access unit.
struct HeldPacket {
    data: Bytes,
    timestamp: u32,
    npt_ns: u64,
    random_access: bool,
}

impl TrackClock {
    /// Media time in ns of an RTP timestamp: `offset_ns` stands for
    /// `base`. Packets may come before the base (an origin answering a
    /// Range PLAY starts at the keyframe before the position its RTP-Info
    /// names), so ticks are signed; the result stops at npt 0.
    ///
    /// An RTP-Info anchor is trusted unless the first packet comes more than
    /// a second after it: gst-rtsp-server, for one, answers a Range PLAY of
    /// a Matroska title with the video track's `rtptime` of the file's start;
    /// the first packet then stands for the Range start instead.
    fn npt_ns(&mut self, ts: u32, offset_ns: u64) -> u64 {
        if std::mem::take(&mut self.check_base) {
            let ahead = self
                .base
                .map_or(0, |base| i64::from(ts.wrapping_sub(base) as i32));
            if ahead > i64::from(self.clock_rate) {
                self.base = Some(ts);
                self.last_ext = Some(i64::from(ts));
            }
        }
        let base = *self.base.get_or_insert(ts);
        let ext = match self.last_ext {
            // The nearest 64-bit value to the last one with these low 32 bits.
            Some(last) => last + i64::from(ts.wrapping_sub(last as u32) as i32),
            None => i64::from(ts),
        };
        self.last_ext = Some(ext);
        let ticks = i128::from(ext - i64::from(base));
        let ns = (ticks * 1_000_000_000).div_euclid(i128::from(self.clock_rate.max(1)));
        u64::try_from((i128::from(offset_ns) + ns).max(0)).unwrap_or(u64::MAX)
    }
}

struct HubTask {
    hub: Arc<Hub>,
    target: OriginTarget,
    store: Store,
    settings: HubSettings,
    clocks: Vec<TrackClock>,
    has_video: bool,
    origin: Option<(OriginSession, mpsc::Receiver<OriginEvent>)>,
    writer: Option<Writer>,
    /// Media time added after a reconnect, so the recording keeps going forward.
    npt_offset_ns: u64,
    last_npt_ns: u64,
    discontinuity: bool,
    failed: bool,
    backoff: Backoff,
    reconnects_left: u32,
    counters: OriginCounters,
}

impl HubTask {
    fn new(
        hub: Arc<Hub>,
        target: OriginTarget,
        store: Store,
        settings: HubSettings,
        counters: OriginCounters,
    ) -> HubTask {
        let clocks: Vec<TrackClock> = hub
            .described
            .tracks
            .iter()
            .map(|t| TrackClock {
                codec: Codec::from_encoding_name(&t.encoding),
                video: t.media.eq_ignore_ascii_case("video"),
                clock_rate: t.clock_rate,
                base: None,
                last_ext: None,
                check_base: false,
                last_rap_ts: None,
                unit: Vec::new(),
            })
            .collect();
        let has_video = clocks.iter().any(|c| c.video);
        HubTask {
            hub,
            target,
            store,
            settings,
            clocks,
            has_video,
            origin: None,
            writer: None,
            npt_offset_ns: 0,
            last_npt_ns: 0,
            discontinuity: false,
            failed: false,
            backoff: Backoff::default(),
            reconnects_left: settings.reconnect_attempts,
            counters,
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, mut players: watch::Receiver<usize>) {
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
                event = next_event(&mut self.origin) => match event {
                    OriginEvent::Packet { track, rtcp, data } => self.on_packet(track, rtcp, data),
                    OriginEvent::Ended { reason } => {
                        self.origin = None;
                        match self.after_end(reason) {
                            Some(delay) => reconnect_at = Some(Instant::now() + delay),
                            None => break,
                        }
                    }
                },
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
        if self.origin.is_some() || self.writer.is_some() {
            return Ok(());
        }
        self.connect().await?;
        self.open_writer();
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), OriginError> {
        let (session, events) =
            OriginSession::start(&self.target, &self.hub.described, self.hub.start_npt).await?;
        let play = session.play_info();
        if !self.hub.live {
            // On demand: media time is exactly where the origin said PLAY
            // starts (it may snap a Range back to a keyframe), so that runs
            // recorded by different fills line up to the tick.
            self.npt_offset_ns = play.start_npt.map_or(0, secs_to_ns);
            for (clock, rtptime) in self.clocks.iter_mut().zip(&play.rtptimes) {
                clock.base = *rtptime;
                clock.last_ext = rtptime.map(i64::from);
                clock.check_base = rtptime.is_some();
            }
        } else if self.origin.is_none() && self.last_npt_ns > 0 {
            // A new origin session starts new RTP clocks: continue the
            // recording's media time from where the last one stopped.
            self.npt_offset_ns = self.last_npt_ns;
            self.discontinuity = true;
            for clock in &mut self.clocks {
                clock.base = None;
                clock.last_ext = None;
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

    fn open_writer(&mut self) {
        if !self.hub.storable {
            info!(key = %self.hub.key, "origin forbids storing this title (private or no-store): relaying only");
            return;
        }
        let described = &self.hub.described;
        if self.hub.live {
            // A live recording is of one origin session; an older one of the
            // same stream is replaced (unless somebody is replaying it).
            let _ = self.store.purge(&self.hub.key, false);
        }
        let meta = Metadata {
            key: self.hub.key.clone(),
            sdp: described.sdp_text.clone(),
            cache_headers: StoreCacheHeaders {
                last_modified: described.cache_headers.last_modified.clone(),
                etag: described.cache_headers.etag.clone(),
                cache_control: described.cache_headers.cache_control.clone(),
                expires: described.cache_headers.expires.clone(),
            },
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
            range: described.range.map(|(start, end)| NptRange {
                start_ns: secs_to_ns(start),
                end_ns: end.map(secs_to_ns),
            }),
            state: PresentationState::Recording,
            spans: Vec::new(),
            // The description is as recent as the recording.
            validated_at_unix_ms: crate::freshness::unix_ms(std::time::SystemTime::now()),
        };
        match self.store.open_writer(&self.hub.key, meta) {
            Ok(writer) => {
                // Each recording run starts a new stretch of the title: a
                // player crossing into it must splice, not continue.
                self.discontinuity = true;
                self.writer = Some(writer);
            }
            Err(e) => warn!(key = %self.hub.key, error = %e, "not recording this presentation"),
        }
    }

    fn on_packet(&mut self, track: usize, rtcp: bool, data: Bytes) {
        self.counters.received_bytes.inc_by(data.len() as u64);
        let Some(clock) = self.clocks.get_mut(track) else {
            return;
        };
        let mut random_access_ts = None;
        let mut npt_ns = self.last_npt_ns;
        if !rtcp {
            let Ok(rtp) = RtpView::parse(&data) else {
                return; // not RTP: nothing a player could use either
            };
            npt_ns = clock.npt_ns(rtp.timestamp(), self.npt_offset_ns);
            let random_access = if clock.video {
                // Parameter sets travel in packets of their own just before
                // a keyframe, with its timestamp (encoders and cameras send
                // them with keyframes): counting them starts a late joiner
                // or a seek with them, so its decoder starts clean.
                let payload = rtp.payload();
                rtp::is_random_access(clock.codec, payload)
                    || rtp::has_parameter_sets(clock.codec, payload)
            } else {
                // Without video every audio packet is a place to start.
                !self.has_video
            };
            // Only the first packet of a keyframe's access unit (its
            // parameter sets come first, with the same timestamp) is where a
            // seek may land.
            let first_of_unit = random_access && clock.last_rap_ts != Some(rtp.timestamp());
            if random_access && clock.video {
                random_access_ts = Some(rtp.timestamp());
                clock.last_rap_ts = Some(rtp.timestamp());
            }
            self.last_npt_ns = self.last_npt_ns.max(npt_ns);
            if clock.video {
                let timestamp = rtp.timestamp();
                let marker = rtp.marker();
                if clock.unit.last().is_some_and(|p| p.timestamp != timestamp) {
                    self.record_unit(track);
                }
                if let Some(clock) = self.clocks.get_mut(track) {
                    clock.unit.push(HeldPacket {
                        data: data.clone(),
                        timestamp,
                        npt_ns,
                        random_access: first_of_unit,
                    });
                }
                if marker {
                    self.record_unit(track);
                }
            } else {
                self.record(track, rtcp, &data, npt_ns, first_of_unit);
            }
        } else {
            self.record(track, rtcp, &data, npt_ns, false);
        }
        self.hub.publish(
            HubPacket { track, rtcp, data },
            random_access_ts,
            self.settings.gop_max_bytes,
        );
    }

    /// Records the held access unit of a video track.
    fn record_unit(&mut self, track: usize) {
        let unit = match self.clocks.get_mut(track) {
            Some(clock) => std::mem::take(&mut clock.unit),
            None => return,
        };
        for p in unit {
            self.record(track, false, &p.data, p.npt_ns, p.random_access);
        }
    }

    fn record(&mut self, track: usize, rtcp: bool, data: &[u8], npt_ns: u64, random_access: bool) {
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
            media_time_ns: npt_ns,
            payload: data,
        };
        if let Err(e) = writer.append(&record) {
            // Disk full or an I/O error: stop recording, keep relaying. What
            // was written stays readable.
            warn!(key = %self.hub.key, error = %e, "recording stopped");
            if let Some(writer) = self.writer.take() {
                if let Err(e) = writer.finish(PresentationState::Partial) {
                    warn!(key = %self.hub.key, error = %e, "could not seal the recording");
                }
            }
        }
    }

    /// True if earlier runs hold the title from its start up to `npt_ns`.
    fn held_before(&self, npt_ns: u64) -> bool {
        const SLACK_NS: u64 = 500_000_000;
        let Ok(Some(meta)) = self.store.metadata(&self.hub.key) else {
            return false;
        };
        let start = meta.range.map_or(0, |r| r.start_ns);
        meta.spans
            .iter()
            .any(|s| s.start_ns <= start + SLACK_NS && s.end_ns + SLACK_NS >= npt_ns)
    }

    async fn shut_down(mut self) {
        self.hub.close();
        if let Some((session, _)) = self.origin.take() {
            session.teardown().await;
        }
        if let Some(writer) = self.writer.take() {
            // Complete only when an on-demand title was recorded to the
            // origin's own end without a failure, and everything before this
            // run's start is held too (from an earlier run).
            let range = self.hub.described.range;
            let reached_end = range
                .and_then(|(_, end)| end)
                .is_some_and(|end| self.last_npt_ns + 1_000_000_000 >= secs_to_ns(end));
            let complete = !self.hub.live
                && !self.failed
                && reached_end
                && (self.npt_offset_ns == 0 || self.held_before(self.npt_offset_ns));
            let state = if complete {
                PresentationState::Complete
            } else {
                PresentationState::Partial
            };
            if let Err(e) = writer.finish(state) {
                warn!(key = %self.hub.key, error = %e, "could not seal the recording");
            }
        }
    }
}

/// When a hub with no player attached since `idle_since` closes: `linger`
/// later; but a hub created for a player or handed to its SETUP
/// (`claimed_at`) since the last player attached (`attached_at`) waits at
/// least `grace` after that for the player's PLAY, whatever the linger.
/// Before its PLAY a player is not attached, and a short linger (0 s) would
/// otherwise close the hub between DESCRIBE and PLAY: the SETUP would then
/// describe the title again and the PLAY find its hub closed (503).
///
/// A hub nobody has played yet has no origin session: waiting for the first
/// PLAY costs the origin nothing. Once players have come and gone (each PLAY
/// came after its claim) only the linger counts, so it keeps its meaning; a
/// player that set up since then keeps the origin session for at most
/// `grace`. A DESCRIBE of an existing hub claims nothing ([`Hub::joinable`]):
/// repeated by a probe, it would keep the origin session open for good.
fn idle_deadline(
    idle_since: Instant,
    claimed_at: Option<Instant>,
    attached_at: Option<Instant>,
    linger: Duration,
    grace: Duration,
) -> Instant {
    let linger_end = idle_since + linger;
    match claimed_at {
        Some(claimed) if attached_at.is_none_or(|attached| claimed > attached) => {
            linger_end.max(claimed + grace)
        }
        _ => linger_end,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(rate: u32) -> TrackClock {
        TrackClock {
            codec: Codec::Other,
            video: true,
            clock_rate: rate,
            base: None,
            last_ext: None,
            check_base: false,
            last_rap_ts: None,
            unit: Vec::new(),
        }
    }

    const LINGER_0: Duration = Duration::ZERO;
    const GRACE: Duration = Duration::from_secs(60);

    /// A live title with no tracks, as its origin would describe it.
    fn live_title() -> Described {
        let sdp_text = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string();
        Described {
            sdp: streamcache_rtsp::sdp::Sdp::parse(&sdp_text).expect("SDP"),
            sdp_text,
            base_url: "rtsp://origin/live".parse().expect("URL"),
            tracks: Vec::new(),
            cache_headers: Default::default(),
            range: None,
        }
    }

    /// A live hub without its task, to drive its state by hand.
    fn bare_hub() -> Arc<Hub> {
        let (tx, _) = broadcast::channel(16);
        Arc::new(Hub {
            key: "rtsp://origin/live".into(),
            described: live_title(),
            live: true,
            start_npt: None,
            storable: true,
            shared: Mutex::new(Shared {
                tx: Some(tx),
                ..Shared::default()
            }),
            players: watch::channel(0).0,
            cmd: mpsc::channel(1).0,
        })
    }

    fn settings(linger: Duration) -> HubSettings {
        HubSettings {
            queue_packets: 16,
            linger,
            reconnect_attempts: 0,
            gop_max_bytes: 1 << 20,
            setup_grace: GRACE,
        }
    }

    /// The hub a DESCRIBE created (and a SETUP claimed again) for a player
    /// that never comes back to PLAY closes once the grace has passed,
    /// without ever having asked the origin for a session.
    #[tokio::test]
    async fn a_hub_whose_player_never_plays_closes_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let config = streamcache_cache::StoreConfig {
            budget_bytes: 1 << 30,
            segment_max_bytes: 1 << 20,
            segment_max_duration_ns: 0,
        };
        let (store, _) = Store::open(dir.path(), config).unwrap();
        let target = OriginTarget {
            url: "rtsp://127.0.0.1:9/live".parse().unwrap(),
            username: None,
            password: None,
            transport: crate::origin::TransportPref::Tcp,
            connect_timeout: Duration::from_secs(1),
            udp_fallback: Duration::from_secs(1),
        };
        let metrics = crate::metrics::Metrics::new();
        let (closed, on_close) = oneshot::channel();
        let hub = Hub::spawn(
            "rtsp://127.0.0.1:9/live".into(),
            HubOrigin {
                target,
                counters: metrics.origin("/m"),
            },
            live_title(),
            None,
            store,
            HubSettings {
                setup_grace: Duration::from_millis(300),
                ..settings(LINGER_0)
            },
            Box::new(move || {
                let _ = closed.send(());
            }),
        );
        assert!(hub.claim(), "handed to the player's SETUP");
        tokio::time::timeout(Duration::from_secs(30), on_close)
            .await
            .expect("the hub closes after the grace")
            .unwrap();
        assert!(!hub.claim(), "a closed hub is handed to nobody");
        assert_eq!(
            metrics.sample(
                "streamcache_origin_failures_total{mount=\"/m\",reason=\"connect_refused\"}"
            ),
            None,
            "the origin was never asked"
        );
    }

    #[test]
    fn an_idle_hub_past_its_deadline_closes() {
        let hub = bare_hub();
        let long_ago = Instant::now() - Duration::from_secs(1);
        assert_eq!(hub.close_if_idle(long_ago, &settings(LINGER_0)), None);
        assert!(!hub.claim(), "a closed hub is handed to nobody");
    }

    #[test]
    fn a_player_attaching_as_the_deadline_passes_keeps_the_hub_open() {
        // The task saw no player, then a player attached (PLAY) before the
        // task took the lock to close: the hub must stay open for it.
        let hub = bare_hub();
        let idle_since = Instant::now() - Duration::from_secs(1);
        let sub = hub.subscribe().expect("the hub is open");
        assert!(hub.close_if_idle(idle_since, &settings(LINGER_0)).is_some());
        assert!(!hub.lock().closed);
        drop(sub);
        assert_eq!(hub.close_if_idle(idle_since, &settings(LINGER_0)), None);
    }

    #[test]
    fn a_hub_not_played_yet_waits_the_grace_for_its_player_whatever_the_linger() {
        let created = Instant::now();
        // Just created for a DESCRIBE: the player's PLAY is still to come.
        let deadline = idle_deadline(created, Some(created), None, LINGER_0, GRACE);
        assert_eq!(deadline, created + GRACE);
        // Handed to the player again by its SETUP: the grace restarts.
        let setup = created + Duration::from_secs(5);
        let deadline = idle_deadline(created, Some(setup), None, LINGER_0, GRACE);
        assert_eq!(deadline, setup + GRACE);
        // A linger longer than the grace still counts.
        let long = Duration::from_secs(600);
        let deadline = idle_deadline(created, Some(created), None, long, GRACE);
        assert_eq!(deadline, created + long);
    }

    #[test]
    fn a_hub_whose_players_have_left_closes_after_the_linger() {
        let claimed = Instant::now();
        let played = claimed + Duration::from_millis(10);
        let left = played + Duration::from_secs(4);
        let deadline = idle_deadline(left, Some(claimed), Some(played), LINGER_0, GRACE);
        assert_eq!(deadline, left);
        let linger = Duration::from_secs(10);
        let deadline = idle_deadline(left, Some(claimed), Some(played), linger, GRACE);
        assert_eq!(deadline, left + linger);
    }

    #[test]
    fn a_player_handed_the_hub_after_the_last_play_is_waited_for() {
        // Another player's SETUP came after the last PLAY: when
        // the players still attached leave, its PLAY is still to come.
        let played = Instant::now();
        let claimed = played + Duration::from_secs(1);
        let left = played + Duration::from_secs(2);
        let deadline = idle_deadline(left, Some(claimed), Some(played), LINGER_0, GRACE);
        assert_eq!(deadline, claimed + GRACE);
    }

    #[test]
    fn media_time_counts_from_first_timestamp() {
        let mut c = clock(90_000);
        assert_eq!(c.npt_ns(1000, 0), 0);
        assert_eq!(c.npt_ns(1000 + 90_000, 0), 1_000_000_000);
        assert_eq!(c.npt_ns(1000 + 45_000, 0), 500_000_000);
    }

    #[test]
    fn packets_before_the_base_come_before_the_offset() {
        let mut c = clock(90_000);
        c.base = Some(9_000);
        c.last_ext = Some(9_000);
        // 0.1 s before the position RTP-Info named (10.1 s): 10.0 s.
        assert_eq!(c.npt_ns(0, 10_100_000_000), 10_000_000_000);
        assert_eq!(c.npt_ns(9_000, 10_100_000_000), 10_100_000_000);
        assert_eq!(c.npt_ns(0, 50_000_000), 0, "never before npt 0");
    }

    #[test]
    fn an_rtp_info_anchor_far_before_the_first_packet_is_not_trusted() {
        let mut c = clock(90_000);
        c.base = Some(1_000);
        c.last_ext = Some(1_000);
        c.check_base = true;
        // The first packet is 10 s after the anchor: it is the Range start.
        assert_eq!(c.npt_ns(901_000, 10_021_000_000), 10_021_000_000);
        assert_eq!(c.npt_ns(904_600, 10_021_000_000), 10_061_000_000);
    }

    #[test]
    fn media_time_survives_timestamp_wrap() {
        let mut c = clock(90_000);
        let start = u32::MAX - 44_999;
        assert_eq!(c.npt_ns(start, 0), 0);
        assert_eq!(c.npt_ns(start.wrapping_add(90_000), 0), 1_000_000_000);
        assert_eq!(c.npt_ns(start.wrapping_add(180_000), 0), 2_000_000_000);
    }
}
