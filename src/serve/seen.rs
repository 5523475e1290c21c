//! What players have been served under each mount since the daemon
//! started: how many distinct live and on-demand presentations, for the
//! admin API's list of mounts (an operator checking that a mount leads
//! somewhere useful).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::mounts::Mount;

/// Presentations remembered per mount and kind; beyond, the count stops
/// growing (it is a hint, and memory stays bounded whatever players ask).
const MAX_TITLES: usize = 10_000;

#[derive(Default)]
struct Titles {
    live: HashSet<String>,
    on_demand: HashSet<String>,
}

/// Distinct presentations seen, by mount. A mount is its path and origin:
/// a reload that points a path at another origin starts it afresh.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<(String, String), Titles>>);

impl Seen {
    /// A presentation of `mount` (by key) was described or set up.
    pub fn note(&self, mount: &Mount, key: &str, live: bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let titles = map
            .entry((mount.path.clone(), mount.origin.to_string()))
            .or_default();
        let set = if live {
            &mut titles.live
        } else {
            &mut titles.on_demand
        };
        if set.len() < MAX_TITLES && !set.contains(key) {
            set.insert(key.to_owned());
        }
    }

    /// (live, on-demand) presentations seen under `mount`; `None` when none.
    pub fn counts(&self, mount: &Mount) -> Option<(usize, usize)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(mount.path.clone(), mount.origin.to_string()))
            .map(|t| (t.live.len(), t.on_demand.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountTransport;

    fn mount(path: &str, origin: &str) -> Mount {
        Mount {
            path: path.into(),
            origin: url::Url::parse(origin).expect("url"),
            transport: MountTransport::Auto,
            username: None,
            password: None,
            player_auth: None,
        }
    }

    #[test]
    fn distinct_titles_per_mount_and_kind() {
        let seen = Seen::default();
        let cams = mount("/cams", "rtsp://o/cams");
        assert_eq!(seen.counts(&cams), None);
        seen.note(&cams, "rtsp://o/cams/a", true);
        seen.note(&cams, "rtsp://o/cams/a", true);
        seen.note(&cams, "rtsp://o/cams/b.mkv", false);
        assert_eq!(seen.counts(&cams), Some((1, 1)));
        // The same path on another origin (after a reload) starts afresh.
        assert_eq!(seen.counts(&mount("/cams", "rtsp://p/cams")), None);
    }
}
