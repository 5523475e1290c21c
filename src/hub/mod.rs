//! The hub: one origin session per presentation, however many players.
//!
//! A hub is created when a presentation is first described and lives until
//! its last player has been gone for the configured linger (or the origin
//! ends for good); a hub created for a player's DESCRIBE or SETUP, or
//! handed to its SETUP, also waits for that player's PLAY (see
//! [`linger`]). For every packet from the origin its task
//!
//! 1. stamps it with its media time and whether it is a random-access point
//!    ([`clock`]);
//! 2. fans it out to the players, keeping the GOP buffer for late joiners
//!    ([`fanout`]);
//! 3. records it in the store ([`recorder`]); once a recording stops short
//!    (disk full), keeps what the store lacks for the fill's players
//!    ([`tail`]).
//!
//! The files: this one is the [`Hub`] handle that sessions hold (claim,
//! join, play, hold, stop); [`supervisor`] is the task that owns the origin
//! session (reconnect with backoff) and decides when the hub closes. See
//! `docs/design/hub.md`.

mod clock;
mod fanout;
mod linger;
mod recorder;
mod supervisor;
mod tail;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use streamcache_cache::Store;
use streamcache_types::Npt;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

pub use clock::Stamped;
pub use fanout::{track_bit, usual_channel, Batch, HubBatch, HubPacket, LastSsrcs};
pub use recorder::Recorder;
pub use tail::{Tail, TailCursor, TailRead};

use crate::metrics::OriginCounters;
use crate::origin::{Described, OriginError, OriginTarget};
use fanout::Fanout;
use supervisor::Supervisor;

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
    /// its SETUP waits for that player's PLAY, whatever the linger: the
    /// player session timeout, as long as a player may take between
    /// requests.
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
    start_npt: Option<Npt>,
    /// The origin allows a shared cache to store the title (not `private`
    /// nor `no-store`).
    storable: bool,
    shared: Mutex<Shared>,
    players: watch::Sender<usize>,
    cmd: mpsc::Sender<Cmd>,
}

/// What players and the task change under the hub's lock.
struct Shared {
    fanout: Fanout,
    closed: bool,
    /// When the hub was last handed to a player that has yet to PLAY
    /// ([`Hub::claim`] by a SETUP, and its creation).
    claimed_at: Option<Instant>,
    /// When a player last attached (PLAY).
    attached_at: Option<Instant>,
    /// Since the recording stopped short: what the store lacks.
    tail: Option<Arc<Tail>>,
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
    pub rx: broadcast::Receiver<HubBatch>,
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
        start_npt: Option<Npt>,
        store: Store,
        settings: HubSettings,
        on_close: Box<dyn FnOnce() + Send>,
    ) -> Arc<Hub> {
        let (hub, cmd_rx, players_rx) = Hub::new(key, described, start_npt, settings);
        let task = Supervisor::new(Arc::clone(&hub), origin, store, settings);
        tokio::spawn(async move {
            task.run(cmd_rx, players_rx).await;
            on_close();
        });
        hub
    }

    /// The hub without its task.
    fn new(
        key: String,
        described: Described,
        start_npt: Option<Npt>,
        settings: HubSettings,
    ) -> (Arc<Hub>, mpsc::Receiver<Cmd>, watch::Receiver<usize>) {
        let (players, players_rx) = watch::channel(0);
        let (cmd, cmd_rx) = mpsc::channel(16);
        let live = described.range.is_none_or(|r| r.end.is_none());
        let storable = crate::freshness::CacheControl::storable(
            described.cache_headers.cache_control.as_deref(),
        );
        let hub = Arc::new(Hub {
            key,
            described,
            live,
            start_npt: start_npt.filter(|&s| s > Npt::ZERO && !live),
            storable,
            shared: Mutex::new(Shared {
                fanout: Fanout::new(settings.queue_packets, settings.gop_max_bytes),
                closed: false,
                // Created for a player's DESCRIBE or SETUP.
                claimed_at: Some(Instant::now()),
                attached_at: None,
                tail: None,
            }),
            players,
            cmd,
        });
        (hub, cmd_rx, players_rx)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn described(&self) -> &Described {
        &self.described
    }

    /// Hands the hub to a player's SETUP, so that it waits for that
    /// player's PLAY (see [`linger`]); false if it cannot be joined.
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
    pub fn fills_from(&self) -> Option<Npt> {
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
        if shared.closed {
            return Err(HubError::Closed);
        }
        let (backlog, rx) = shared.fanout.subscribe().ok_or(HubError::Closed)?;
        Ok(Subscription {
            backlog,
            rx,
            _guard: self.guard(&mut shared),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock leaves only a GOP buffer behind;
        // carrying on with it is safe.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fans packets out to the players as one batch (see [`fanout`]), and
    /// keeps them in the tail once the recording has stopped.
    fn publish(&self, packets: Vec<(HubPacket, Option<u32>)>) {
        let mut shared = self.lock();
        if let Some(tail) = &shared.tail {
            for (packet, _) in &packets {
                tail.push(packet.clone());
            }
        }
        shared.fanout.publish(packets);
    }

    /// The recording stopped short: from now on the hub keeps what the
    /// store lacks (`unwritten`, then every packet it publishes) for the
    /// players of the fill. Called before the recording is sealed, so that a
    /// player who sees the store's end also sees the tail.
    fn recording_stopped(&self, unwritten: Vec<HubPacket>, continues_store: bool) {
        if self.relays_to_players() {
            return; // its players have the broadcast
        }
        let mut shared = self.lock();
        if shared.tail.is_none() {
            shared.tail = Some(Arc::new(Tail::new(continues_store, unwritten)));
        }
    }

    /// What the store lacks of this fill, when its recording stopped short:
    /// store playback goes on from there at the store's end.
    pub fn tail(&self) -> Option<Arc<Tail>> {
        self.lock().tail.clone()
    }

    /// Closes the hub if, with no player attached since `idle_since`, its
    /// [`linger::idle_deadline`] has passed; otherwise returns that
    /// deadline. Under the lock that [`Hub::claim`] takes and under which
    /// players attach, so that no player is handed a hub that is closing,
    /// nor a hub closed under a player that has just attached (whose count
    /// change the task has yet to see: it then stops waiting for the
    /// deadline).
    fn close_if_idle(&self, idle_since: Instant, settings: &HubSettings) -> Option<Instant> {
        let mut shared = self.lock();
        let deadline = linger::idle_deadline(
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
        shared.fanout.close();
        if let Some(tail) = &shared.tail {
            tail.close();
        }
    }
}

#[cfg(test)]
mod tests;
