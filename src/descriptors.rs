//! The file descriptor budget: the player limits in force must fit in the
//! descriptors the process may open.
//!
//! Every player connection is a descriptor, and every session can take
//! [`FDS_PER_SESSION`] more. With the default limits (8,000 connections,
//! 4,000 sessions) that is far more than a shell's 1,024 or a container's
//! 20,000, and when descriptors run out `accept` fails in a loop and nobody
//! gets an answer, the operator's admin API included. So at start:
//!
//! 1. the soft `RLIMIT_NOFILE` is raised to the hard limit (systemd's unit
//!    sets the latter with `LimitNOFILE=`);
//! 2. the limits must fit in it with [`RESERVE`] to spare (the admin API,
//!    connections being refused with 503, the store, logs). If they do not,
//!    `max_connections` and `max_sessions` are lowered in proportion, with
//!    one warning naming the numbers, so that the excess is refused politely
//!    (503) instead of failing; below a floor of [`MIN_CONNECTIONS`] and
//!    [`MIN_SESSIONS`] the daemon refuses to start.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use tracing::{info, warn};

use crate::serve::limits::PlayerLimits;

/// Descriptors a session may hold: the player's two tracks over UDP (RTP
/// and RTCP sockets each: 4), and at worst an origin session of its own
/// (its RTSP connection and 4 UDP sockets: 5) and a store file it is read
/// from or recorded into (1).
pub const FDS_PER_SESSION: u64 = 10;
/// Descriptors kept for everything else: the admin API's connections
/// (`admin::MAX_CONNECTIONS`), connections being answered 503
/// (`serve::limits::MAX_REFUSING`), and 128 for listeners, the runtime,
/// logs, the store's index and configuration reloads.
pub const RESERVE: u64 =
    crate::admin::MAX_CONNECTIONS as u64 + crate::serve::limits::MAX_REFUSING as u64 + 128;
/// Below these the daemon is not worth starting.
pub const MIN_CONNECTIONS: usize = 16;
pub const MIN_SESSIONS: usize = 4;

/// The descriptors `limits` need, reserve included.
pub fn needed(limits: &PlayerLimits) -> u64 {
    let connections = limits.max_connections as u64;
    let sessions = limits.max_sessions as u64;
    RESERVE
        .saturating_add(connections)
        .saturating_add(sessions.saturating_mul(FDS_PER_SESSION))
}

/// The limits that fit in `descriptors`: `limits` themselves when they do,
/// else `max_connections` and `max_sessions` scaled down in the same
/// proportion (and `max_sessions_per_ip` to at most `max_sessions`).
/// `Err` with the descriptors needed when even the floor does not fit.
pub fn fit(limits: PlayerLimits, descriptors: u64) -> Result<PlayerLimits, u64> {
    if needed(&limits) <= descriptors {
        return Ok(limits);
    }
    let floor = PlayerLimits {
        max_connections: MIN_CONNECTIONS.min(limits.max_connections),
        max_sessions: MIN_SESSIONS.min(limits.max_sessions),
        ..limits
    };
    if needed(&floor) > descriptors {
        return Err(needed(&floor));
    }
    let available = u128::from(descriptors - RESERVE);
    let demand = u128::from(needed(&limits) - RESERVE);
    let scale = |n: usize, min: usize| {
        let scaled = n as u128 * available / demand;
        usize::try_from(scaled).unwrap_or(usize::MAX).max(min)
    };
    let mut fitted = PlayerLimits {
        max_connections: scale(limits.max_connections, floor.max_connections),
        max_sessions: scale(limits.max_sessions, floor.max_sessions),
        ..limits
    };
    // The floors can push one over: take the excess from connections, then
    // from sessions (the floor itself fits, checked above).
    while needed(&fitted) > descriptors && fitted.max_connections > floor.max_connections {
        fitted.max_connections -= 1;
    }
    while needed(&fitted) > descriptors && fitted.max_sessions > floor.max_sessions {
        fitted.max_sessions -= 1;
    }
    fitted.max_sessions_per_ip = fitted.max_sessions_per_ip.min(fitted.max_sessions);
    Ok(fitted)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and fits `limits` in
/// it, logging what was done. `Err` when even the floor does not fit.
pub fn apply(limits: PlayerLimits) -> anyhow::Result<PlayerLimits> {
    let descriptors = raise_soft_limit();
    match fit(limits, descriptors) {
        Ok(fitted) if fitted.max_connections == limits.max_connections
            && fitted.max_sessions == limits.max_sessions =>
        {
            info!(descriptors, needed = needed(&limits), "file descriptor budget");
            Ok(fitted)
        }
        Ok(fitted) => {
            warn!(
                descriptors,
                needed = needed(&limits),
                max_connections = fitted.max_connections,
                max_sessions = fitted.max_sessions,
                max_sessions_per_ip = fitted.max_sessions_per_ip,
                "the file descriptor limit cannot hold [rtsp] max_connections = {} and max_sessions = {} ({} descriptors per session, {} in reserve): lowered to fit; raise LimitNOFILE (ulimit -n) or lower them",
                limits.max_connections,
                limits.max_sessions,
                FDS_PER_SESSION,
                RESERVE,
            );
            Ok(fitted)
        }
        Err(floor) => anyhow::bail!(
            "the file descriptor limit ({descriptors}) cannot hold even {MIN_CONNECTIONS} connections and {MIN_SESSIONS} sessions ({floor} descriptors): raise LimitNOFILE (ulimit -n)"
        ),
    }
}

/// The soft `RLIMIT_NOFILE` after raising it as far as allowed.
fn raise_soft_limit() -> u64 {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read the file descriptor limit: assuming 1024");
            return 1024;
        }
    };
    // An unlimited hard limit still stops at the kernel's `fs.nr_open`.
    let target = if hard == RLIM_INFINITY {
        nr_open().unwrap_or(soft)
    } else {
        hard
    };
    if soft >= target {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => target,
        Err(e) => {
            warn!(error = %e, soft, hard, "cannot raise the file descriptor limit");
            soft
        }
    }
}

fn nr_open() -> Option<u64> {
    proc_value("/proc/sys/fs/nr_open")
}

/// A number the kernel publishes under `/proc/sys`; `None` where it cannot
/// be read (not Linux, a sandbox).
pub(crate) fn proc_value<T: std::str::FromStr>(path: &str) -> Option<T> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(connections: usize, sessions: usize, per_ip: usize) -> PlayerLimits {
        PlayerLimits {
            max_sessions: sessions,
            max_sessions_per_ip: per_ip,
            max_connections: connections,
            idle_connection: Duration::from_secs(60),
            write_ticks: crate::timing::WriteTicks::OFF,
            relay_write_ticks: crate::timing::WriteTicks::OFF,
        }
    }

    #[test]
    fn limits_that_fit_are_kept() {
        let defaults = limits(8000, 4000, 1000);
        assert_eq!(needed(&defaults), 8000 + 40_000 + RESERVE);
        let kept = fit(defaults, 65_536).expect("fits");
        assert_eq!(
            (
                kept.max_connections,
                kept.max_sessions,
                kept.max_sessions_per_ip
            ),
            (8000, 4000, 1000)
        );
    }

    #[test]
    fn limits_that_do_not_fit_are_lowered_in_proportion() {
        // The container of the issue: 20,000 descriptors.
        let lowered = fit(limits(8000, 4000, 1000), 20_000).expect("fits lowered");
        assert!(needed(&lowered) <= 20_000, "{lowered:?}");
        assert_eq!(
            lowered.max_connections,
            8000 * (20_000 - RESERVE) as usize / 48_000
        );
        assert_eq!(
            lowered.max_sessions,
            4000 * (20_000 - RESERVE) as usize / 48_000
        );
        assert_eq!(lowered.max_sessions_per_ip, 1000);
        // A shell's 1,024: a few dozen players, per-address bounded by the total.
        let small = fit(limits(8000, 4000, 1000), 1024).expect("fits lowered");
        assert!(needed(&small) <= 1024, "{small:?}");
        assert!(small.max_connections >= MIN_CONNECTIONS);
        assert_eq!(small.max_sessions_per_ip, small.max_sessions);
    }

    #[test]
    fn fitted_limits_never_need_more_than_there_is() {
        // Connections already at their floor: sessions give way.
        let available = RESERVE + 1000;
        let fitted = fit(limits(MIN_CONNECTIONS, 10_000, 10_000), available).expect("fits");
        assert!(needed(&fitted) <= available, "{fitted:?}");
        for (c, s) in [(16, 10_000), (10_000, 4), (5000, 5000), (1, 1)] {
            if let Ok(fitted) = fit(limits(c, s, s), available) {
                assert!(needed(&fitted) <= available, "{c} {s}: {fitted:?}");
            }
        }
    }

    #[test]
    fn below_the_floor_the_daemon_does_not_start() {
        let floor = RESERVE + MIN_CONNECTIONS as u64 + MIN_SESSIONS as u64 * FDS_PER_SESSION;
        assert!(fit(limits(8000, 4000, 1000), floor).is_ok());
        assert_eq!(fit(limits(8000, 4000, 1000), floor - 1).err(), Some(floor));
        // Limits below the floor themselves are fine if they fit.
        assert!(fit(limits(2, 1, 1), RESERVE + 12).is_ok());
    }
}
