//! When a hub nobody plays closes: the linger, and the grace a player that
//! has set up but not yet played is given.

use std::time::Duration;

use tokio::time::Instant;

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
/// `grace`. A DESCRIBE of an existing hub claims nothing
/// ([`super::Hub::joinable`]): repeated by a probe, it would keep the origin
/// session open for good.
pub(super) fn idle_deadline(
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

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER_0: Duration = Duration::ZERO;
    const GRACE: Duration = Duration::from_secs(60);

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
}
