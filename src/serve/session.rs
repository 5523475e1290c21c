//! Player sessions: what each RTSP session has set up, and the table of them.
//!
//! A session belongs to one presentation (one hub). It outlives the TCP
//! connection that created it when its media goes over UDP (RFC 2326 allows
//! a player to reconnect), and ends with TEARDOWN, with its interleaved
//! connection, when the player is too slow, when the presentation ends, or
//! when nothing was heard from the player for the session timeout.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rand::Rng;
use streamcache_rtsp::loss::LossTracker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use super::cache_status::CacheStatus;
use super::delivery::TrackDelivery;
use crate::catalog::CachedTitle;
use crate::hub::Hub;
use crate::metrics::{Metrics, PlayerCounters};
use crate::mounts::Resolved;
use crate::playback::Control;

/// Where a session's packets come from.
#[derive(Clone)]
pub enum Source {
    /// Relayed from the origin through the presentation's hub.
    Hub(Arc<Hub>),
    /// Played from the store (a cache hit).
    Cache(Arc<CachedTitle>),
}

impl Source {
    pub fn track_count(&self) -> usize {
        match self {
            Source::Hub(hub) => hub.described().tracks.len(),
            Source::Cache(title) => title.metadata.tracks.len(),
        }
    }

    /// The clock rate of a track, for RTP timing.
    pub fn clock_rate(&self, track: usize) -> u32 {
        match self {
            Source::Hub(hub) => hub
                .described()
                .tracks
                .get(track)
                .map_or(90_000, |t| t.clock_rate),
            Source::Cache(title) => title
                .metadata
                .tracks
                .get(track)
                .map_or(90_000, |t| t.clock_rate),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Source::Hub(_) => "origin",
            Source::Cache(_) => "cache",
        }
    }
}

pub struct PlayerSession {
    pub id: String,
    pub presentation: Resolved,
    pub source: Source,
    pub peer: SocketAddr,
    /// The connection that set up interleaved tracks, if any: the session
    /// ends with it.
    pub interleaved_conn: Mutex<Option<u64>>,
    pub started: Instant,
    /// The player's authenticated user name, on a mount with users.
    pub user: Option<String>,
    pub cache_status: CacheStatus,
    state: Mutex<State>,
    /// Set when the session enters the table.
    counters: OnceLock<PlayerCounters>,
}

#[derive(Default)]
struct State {
    tracks: BTreeMap<usize, TrackDelivery>,
    /// The task sending media: a hub forwarder or a store playback.
    forwarder: Option<JoinHandle<()>>,
    /// Commands to a store playback task.
    playback: Option<mpsc::Sender<Control>>,
    last_seen: Option<Instant>,
    bytes_sent: u64,
    /// PAUSEd and not PLAYed since.
    paused: bool,
    /// Loss the player reported in its RTCP.
    loss: LossTracker,
}

impl PlayerSession {
    pub fn new(
        presentation: Resolved,
        source: Source,
        peer: SocketAddr,
        user: Option<String>,
        cache_status: CacheStatus,
    ) -> Arc<PlayerSession> {
        let id = format!("{:016X}", rand::thread_rng().gen::<u64>());
        Arc::new(PlayerSession {
            id,
            presentation,
            source,
            peer,
            interleaved_conn: Mutex::new(None),
            started: Instant::now(),
            user,
            cache_status,
            state: Mutex::new(State {
                last_seen: Some(Instant::now()),
                ..State::default()
            }),
            counters: OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something was heard from the player (a request, RTCP).
    pub fn touch(&self) {
        self.lock().last_seen = Some(Instant::now());
    }

    fn idle_for(&self, now: Instant) -> Duration {
        self.lock()
            .last_seen
            .map_or(Duration::ZERO, |seen| now.saturating_duration_since(seen))
    }

    pub fn add_track(&self, index: usize, delivery: TrackDelivery) {
        self.lock().tracks.insert(index, delivery);
    }

    pub fn tracks(&self) -> BTreeMap<usize, TrackDelivery> {
        self.lock().tracks.clone()
    }

    /// Whether `channel` carries RTCP of one of this session's tracks.
    pub fn is_rtcp_channel(&self, channel: u8) -> bool {
        self.lock()
            .tracks
            .values()
            .any(|t| t.is_rtcp_channel(channel))
    }

    /// Interleaved channels already taken by this session's tracks.
    pub fn uses_channel(&self, channel: u8) -> bool {
        self.lock().tracks.values().any(|t| t.uses_channel(channel))
    }

    pub fn is_playing(&self) -> bool {
        self.lock()
            .forwarder
            .as_ref()
            .is_some_and(|f| !f.is_finished())
    }

    pub fn set_forwarder(&self, forwarder: JoinHandle<()>) {
        if let Some(old) = self.lock().forwarder.replace(forwarder) {
            old.abort();
        }
    }

    /// Stops sending for good (TEARDOWN, end of session; PAUSE of a live stream).
    pub fn stop(&self) {
        let mut state = self.lock();
        state.playback = None;
        if let Some(forwarder) = state.forwarder.take() {
            forwarder.abort();
        }
    }

    /// The running store playback's command channel, if any.
    pub fn playback(&self) -> Option<mpsc::Sender<Control>> {
        let state = self.lock();
        let running = state.forwarder.as_ref().is_some_and(|f| !f.is_finished());
        state.playback.clone().filter(|_| running)
    }

    pub fn set_playback(&self, control: mpsc::Sender<Control>, task: JoinHandle<()>) {
        let mut state = self.lock();
        state.playback = Some(control);
        if let Some(old) = state.forwarder.replace(task) {
            old.abort();
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.lock().bytes_sent += n;
        if let Some(counters) = self.counters.get() {
            counters.sent_bytes.inc_by(n);
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    /// RTCP from the player: it is alive, and its reception reports say
    /// how many packets it lost. Malformed RTCP only keeps it alive.
    pub fn player_rtcp(&self, data: &[u8]) {
        let lost = {
            let mut state = self.lock();
            state.last_seen = Some(Instant::now());
            state.loss.on_rtcp(data).unwrap_or(0)
        };
        if let (Some(counters), 1..) = (self.counters.get(), lost) {
            counters.rtp_lost.inc_by(lost);
        }
    }

    /// `ready` (set up, not sending), `playing` or `paused`.
    fn play_state(&self) -> &'static str {
        let state = self.lock();
        if state.paused {
            "paused"
        } else if state.forwarder.as_ref().is_some_and(|f| !f.is_finished()) {
            "playing"
        } else {
            "ready"
        }
    }

    /// `tcp` when the media goes over the RTSP connection, else `udp`.
    fn transport(&self) -> &'static str {
        let interleaved = self.interleaved_conn.lock().is_ok_and(|c| c.is_some())
            || self
                .tracks()
                .values()
                .any(|t| matches!(t, TrackDelivery::Interleaved { .. }));
        if interleaved {
            "tcp"
        } else {
            "udp"
        }
    }

    fn bytes_sent(&self) -> u64 {
        self.lock().bytes_sent
    }
}

/// All sessions of the server, by id.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<PlayerSession>>>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Sessions started since the daemon started (a cluster node's
    /// reservations for prepared players are consumed by them).
    started: std::sync::atomic::AtomicU64,
}

impl Sessions {
    /// The table; `metrics` reports its sessions by state and transport.
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            timeout,
            metrics,
            started: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&sessions);
        sessions.metrics.watch_sessions(move || {
            weak.upgrade()
                .map(|sessions| sessions.census())
                .unwrap_or_default()
        });
        sessions
    }

    /// The (state, transport) of every session.
    fn census(&self) -> Vec<(&'static str, &'static str)> {
        let all: Vec<Arc<PlayerSession>> = self.lock().values().cloned().collect();
        all.iter()
            .map(|s| (s.play_state(), s.transport()))
            .collect()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<PlayerSession>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, session: Arc<PlayerSession>) {
        info!(
            session = %session.id,
            player = %session.peer,
            mount = %session.presentation.mount.path,
            path = %session.presentation.presentation_path,
            transport = session.transport(),
            cache = %session.cache_status,
            user = session.user.as_deref().unwrap_or("-"),
            "session started"
        );
        let _ = session
            .counters
            .set(self.metrics.player(&session.presentation.mount.path));
        self.lock().insert(session.id.clone(), session);
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sessions started so far.
    pub fn started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sessions in all.
    pub fn total(&self) -> usize {
        self.lock().len()
    }

    /// Sessions in all, and those of players at `ip`.
    pub fn count(&self, ip: IpAddr) -> (usize, usize) {
        let map = self.lock();
        let from_ip = map.values().filter(|s| s.peer.ip() == ip).count();
        (map.len(), from_ip)
    }

    pub fn get(&self, id: &str) -> Option<Arc<PlayerSession>> {
        self.lock().get(id).cloned()
    }

    /// Ends a session: stops its forwarder and logs one line about it.
    pub fn end(&self, id: &str, why: &str) {
        let Some(session) = self.lock().remove(id) else {
            return;
        };
        session.stop();
        info!(
            session = %session.id,
            player = %session.peer,
            mount = %session.presentation.mount.path,
            transport = session.transport(),
            source = session.source.kind(),
            cache = %session.cache_status,
            user = session.user.as_deref().unwrap_or("-"),
            bytes = session.bytes_sent(),
            secs = %format_args!("{:.3}", session.started.elapsed().as_secs_f64()),
            why,
            "session ended"
        );
    }

    /// Ends the sessions whose media went over a connection that closed.
    pub fn end_for_connection(&self, conn: u64) {
        let ids: Vec<String> = self
            .lock()
            .values()
            .filter(|s| s.interleaved_conn.lock().is_ok_and(|c| *c == Some(conn)))
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.end(&id, "connection closed");
        }
    }

    /// Ends sessions not heard from within the timeout. Run periodically.
    pub fn reap(&self) {
        let now = Instant::now();
        let stale: Vec<String> = self
            .lock()
            .values()
            .filter(|s| s.idle_for(now) > self.timeout)
            .map(|s| s.id.clone())
            .collect();
        for id in stale {
            self.end(&id, "timed out");
        }
    }

    /// What every session is doing now, for the admin API.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        let sessions: Vec<Arc<PlayerSession>> = self.lock().values().cloned().collect();
        let now = std::time::SystemTime::now();
        let mut list: Vec<SessionInfo> = sessions
            .iter()
            .map(|s| {
                let since = s.started.elapsed();
                SessionInfo {
                    id: s.id.clone(),
                    player: s.peer,
                    mount: s.presentation.mount.path.clone(),
                    path: s.presentation.presentation_path.clone(),
                    key: s.presentation.key.clone(),
                    transport: s.transport(),
                    state: s.play_state(),
                    bytes_sent: s.bytes_sent(),
                    since,
                    started_at: now.checked_sub(since).unwrap_or(now),
                    source: s.source.kind(),
                    cache: s.cache_status.to_string(),
                    user: s.user.clone(),
                }
            })
            .collect();
        list.sort_by(|a, b| b.since.cmp(&a.since).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// Ends a session from outside (admin purge, reload): stops its media
    /// and, over TCP, closes the player's connection so that it learns the
    /// stream is over (a UDP player just stops receiving).
    pub fn terminate(&self, id: &str, why: &str) {
        let Some(session) = self.get(id) else {
            return;
        };
        let out = session.tracks().into_values().find_map(|t| match t {
            TrackDelivery::Interleaved { out, .. } => Some(out),
            TrackDelivery::Udp { .. } => None,
        });
        self.end(id, why);
        if let Some(out) = out {
            // The writer flushes what is queued, then closes; the connection
            // task sees that and ends whatever else the connection carried.
            out.close();
        }
    }
}

/// One session as the admin API shows it.
pub struct SessionInfo {
    pub id: String,
    pub player: SocketAddr,
    pub mount: String,
    pub path: String,
    pub key: String,
    pub transport: &'static str,
    /// `ready`, `playing` or `paused`.
    pub state: &'static str,
    pub bytes_sent: u64,
    pub since: Duration,
    pub started_at: std::time::SystemTime,
    pub source: &'static str,
    /// `hit`, `partial`, `miss`, `live` or `bypass`.
    pub cache: String,
    /// The authenticated user, on a mount with users.
    pub user: Option<String>,
}
