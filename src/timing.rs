//! A timer helper shared by the hub, playback and the RTSP methods.

use tokio::time::{sleep_until, Instant};

/// Sleeps until `deadline`, or forever without one (a `select!` branch that
/// is off until a deadline is set).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
