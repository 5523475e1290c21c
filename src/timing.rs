//! Small time helpers shared by the hub, playback and the RTSP methods.

use tokio::time::{sleep_until, Instant};

/// Sleeps until `deadline`, or forever without one (a `select!` branch that
/// is off until a deadline is set).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// npt in seconds (as RTSP and SDP write it) to nanoseconds; negative is 0.
pub fn secs_to_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}
