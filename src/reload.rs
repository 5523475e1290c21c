//! Configuration reload (`POST /api/v1/reload`, SIGHUP).
//!
//! The file the daemon was started with is read again and validated; an
//! invalid file changes nothing. A valid one puts its mount table in force at
//! once. Players of mounts that did not change keep playing; players of
//! removed or changed mounts are ended, and the hubs that served those mounts
//! are stopped so that no new request joins them. A mount whose only changes
//! are its player authentication (`[[mount.user]]`, `realm`, `auth_schemes`)
//! keeps its players and hubs: the new users apply from the next request on,
//! on sessions already playing too (the session-side check reads the mount
//! table in force), while media already flowing continues. Every other setting is
//! fixed when the daemon starts: the reload says which of those changed and
//! need a restart.
//!
//! What changed is found by comparing the two files as TOML tables (with
//! mounts matched by path), so that a setting added to the configuration
//! later is covered without touching this module. Settings are compared as
//! written: spelling out a default value that was left out before counts as
//! a change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use toml::{Table, Value};
use tracing::{info, warn};

use crate::config::{trim_slash, Config, ConfigError};
use crate::mounts::{presentation_key, Mounts};
use crate::serve::Server;

/// A configuration file as loaded: the validated config and its raw table.
pub struct Loaded {
    pub config: Config,
    table: Table,
}

/// Reads and validates a configuration file.
pub fn read(path: &Path) -> Result<Loaded, ConfigError> {
    let (config, text) = Config::load_with_text(path)?;
    // Config::parse accepted the text, so it is a TOML table.
    let table = text.parse::<Table>().unwrap_or_default();
    Ok(Loaded { config, table })
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Mount paths now served that were not.
    pub added: Vec<String>,
    /// Mount paths whose settings changed (their players were ended).
    pub changed: Vec<String>,
    /// Mount paths whose only changes are player authentication keys
    /// ([`AUTH_KEYS`]): their players keep playing, the new users apply from
    /// the next request on.
    pub auth_changed: Vec<String>,
    /// Mount paths no longer served (their players were ended).
    pub removed: Vec<String>,
    /// Settings that changed in the file but take effect only on restart.
    pub restart_needed: Vec<String>,
    /// Player sessions ended because their mount was removed or changed.
    pub sessions_ended: usize,
}

/// Reloads the configuration of a running daemon.
pub struct Reloader {
    path: PathBuf,
    server: Arc<Server>,
    /// The table in force; the lock also keeps two reloads from interleaving.
    current: Mutex<Table>,
}

impl Reloader {
    pub fn new(path: PathBuf, server: Arc<Server>, loaded: &Loaded) -> Arc<Reloader> {
        Arc::new(Reloader {
            path,
            server,
            current: Mutex::new(loaded.table.clone()),
        })
    }

    /// Reads the file again and, if it is valid, puts its mounts in force.
    /// On error nothing changed.
    pub fn reload(&self) -> Result<Report, ConfigError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = read(&self.path)?;
        let mut report = diff(&current, &loaded.table);
        let old_mounts = self.server.mounts();
        self.server.set_mounts(Mounts::from_config(&loaded.config));

        let gone: BTreeSet<&str> = report
            .changed
            .iter()
            .chain(&report.removed)
            .map(String::as_str)
            .collect();
        let mut kept_keys = BTreeSet::new();
        for session in self.server.sessions.snapshot() {
            if gone.contains(session.mount.as_str()) {
                let why = if report.removed.contains(&session.mount) {
                    "mount removed by a reload"
                } else {
                    "mount changed by a reload"
                };
                self.server.sessions.terminate(&session.id, why);
                report.sessions_ended += 1;
            } else {
                kept_keys.insert(session.key);
            }
        }
        // Hubs fed through a removed or changed mount (players or not) end,
        // unless a player of a mount still in force shares them.
        let gone_prefixes: Vec<String> = old_mounts
            .iter()
            .filter(|m| gone.contains(m.path.as_str()))
            .map(|m| presentation_key(&m.origin))
            .collect();
        for key in self.server.catalog.hub_keys() {
            if !kept_keys.contains(&key) && gone_prefixes.iter().any(|p| key_is_under(&key, p)) {
                self.server.catalog.retire(&key);
            }
        }
        *current = loaded.table;
        info!(
            added = ?report.added,
            changed = ?report.changed,
            auth_changed = ?report.auth_changed,
            removed = ?report.removed,
            restart_needed = ?report.restart_needed,
            sessions_ended = report.sessions_ended,
            "configuration reloaded"
        );
        if !report.restart_needed.is_empty() {
            warn!(settings = ?report.restart_needed, "changed settings take effect only after a restart");
        }
        Ok(report)
    }

    /// Reloads on every SIGHUP from now on. The handler is in place when
    /// this returns (before readiness is announced: SIGHUP's default action
    /// would end the daemon).
    pub fn watch_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(self.on_sighup(hangups));
            }
            Err(e) => warn!(error = %e, "cannot handle SIGHUP: reload through the admin API only"),
        }
    }

    async fn on_sighup(self: Arc<Self>, mut hangups: tokio::signal::unix::Signal) {
        while hangups.recv().await.is_some() {
            info!(file = %self.path.display(), "SIGHUP: reloading the configuration");
            if let Err(e) = self.reload() {
                self.log_refused(&e);
            }
        }
    }

    /// Logs a refused reload, one line per problem: the same whether it came
    /// by SIGHUP or through the admin API, so that the journal tells why
    /// either left the previous configuration in force.
    pub fn log_refused(&self, e: &ConfigError) {
        for problem in &e.problems {
            warn!(file = %self.path.display(), %problem, "configuration refused");
        }
        warn!("reload refused: the previous configuration stays in force");
    }
}

/// Whether a presentation key lies under a mount's origin key.
fn key_is_under(key: &str, prefix: &str) -> bool {
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

/// Compares two configuration files: mounts matched by path, every other
/// setting by its dotted name.
pub fn diff(old: &Table, new: &Table) -> Report {
    let old_mounts = mounts_by_path(old);
    let new_mounts = mounts_by_path(new);
    let mut report = Report::default();
    for (path, mount) in &new_mounts {
        match old_mounts.get(path) {
            None => report.added.push(path.clone()),
            Some(before) if before == mount => {}
            Some(before) if without_auth(before) == without_auth(mount) => {
                report.auth_changed.push(path.clone())
            }
            Some(_) => report.changed.push(path.clone()),
        }
    }
    report.removed = old_mounts
        .keys()
        .filter(|p| !new_mounts.contains_key(*p))
        .cloned()
        .collect();
    let sections: BTreeSet<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| *k != "mount")
        .collect();
    for section in sections {
        match (old.get(section), new.get(section)) {
            (Some(Value::Table(a)), Some(Value::Table(b))) => {
                let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names {
                    if a.get(name) != b.get(name) {
                        report.restart_needed.push(format!("{section}.{name}"));
                    }
                }
            }
            (Some(Value::Table(t)), None) | (None, Some(Value::Table(t))) => {
                report
                    .restart_needed
                    .extend(t.keys().map(|name| format!("{section}.{name}")));
            }
            (a, b) if a != b => report.restart_needed.push(section.clone()),
            _ => {}
        }
    }
    report
}

/// The keys of a `[[mount]]` table that only concern player authentication:
/// changing them leaves the origin side (and so every hub) as it was.
const AUTH_KEYS: [&str; 3] = ["user", "realm", "auth_schemes"];

/// A `[[mount]]` table with its player authentication keys left out.
fn without_auth(mount: &Table) -> Table {
    let mut mount = mount.clone();
    for key in AUTH_KEYS {
        mount.remove(key);
    }
    mount
}

/// The `[[mount]]` tables by their normalised path, path itself left out
/// (`/a/` and `/a` are the same mount).
fn mounts_by_path(table: &Table) -> BTreeMap<String, Table> {
    let Some(Value::Array(mounts)) = table.get("mount") else {
        return BTreeMap::new();
    };
    mounts
        .iter()
        .filter_map(|m| {
            let mut m = m.as_table()?.clone();
            let path = trim_slash(m.remove("path")?.as_str()?).to_owned();
            Some((path, m))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().expect("toml")
    }

    const BASE: &str = "[rtsp]\nlisten = \"127.0.0.1:8554\"\n\n\
        [[mount]]\npath = \"/a\"\norigin = \"rtsp://h/a\"\n\n\
        [[mount]]\npath = \"/b/\"\norigin = \"rtsp://h/b\"\n\n\
        [[mount]]\npath = \"/c\"\norigin = \"rtsp://h/c\"\n";

    #[test]
    fn same_file_changes_nothing() {
        assert_eq!(diff(&table(BASE), &table(BASE)), Report::default());
    }

    #[test]
    fn mounts_added_changed_removed_by_path() {
        let new = "[rtsp]\nlisten = \"127.0.0.1:8554\"\n\n\
            [[mount]]\npath = \"/c\"\norigin = \"rtsp://h/c\"\ntransport = \"tcp\"\n\n\
            [[mount]]\npath = \"/b\"\norigin = \"rtsp://h/b\"\n\n\
            [[mount]]\npath = \"/d\"\norigin = \"rtsp://h/d\"\n";
        let report = diff(&table(BASE), &table(new));
        assert_eq!(report.added, ["/d"]);
        // "/b/" became "/b": the same mount; moving it in the file is no change.
        assert_eq!(report.changed, ["/c"]);
        assert_eq!(report.removed, ["/a"]);
        assert!(report.restart_needed.is_empty());
    }

    #[test]
    fn other_settings_need_a_restart() {
        let new = "[rtsp]\nlisten = \"127.0.0.1:9554\"\n\n[cache]\ndir = \"/x\"\n\n\
            [admin]\ntoken = \"t\"\n\n\
            [[mount]]\npath = \"/a\"\norigin = \"rtsp://h/a\"\n\n\
            [[mount]]\npath = \"/b/\"\norigin = \"rtsp://h/b\"\n\n\
            [[mount]]\npath = \"/c\"\norigin = \"rtsp://h/c\"\n";
        let report = diff(&table(BASE), &table(new));
        assert_eq!(
            report.restart_needed,
            ["admin.token", "cache.dir", "rtsp.listen"]
        );
        assert!(report.added.is_empty() && report.changed.is_empty());
    }

    const USERS: &str = "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/a\"\n\
        [[mount.user]]\nname = \"ann\"\nmd5 = \"00112233445566778899aabbccddeeff\"\n";

    #[test]
    fn user_realm_and_schemes_are_auth_changes() {
        let more_users = format!(
            "{USERS}[[mount.user]]\nname = \"bob\"\nmd5 = \"ffeeddccbbaa99887766554433221100\"\n"
        );
        let realm = USERS.replace(
            "[[mount.user]]",
            "realm = \"cams\"\nauth_schemes = [\"digest\"]\n[[mount.user]]",
        );
        let secret = USERS.replace("0011", "9911");
        for new in [more_users.as_str(), &realm, &secret] {
            let report = diff(&table(USERS), &table(new));
            assert_eq!(report.auth_changed, ["/a"], "{new}");
            assert!(report.changed.is_empty(), "{new}: {report:?}");
            assert!(report.restart_needed.is_empty(), "{new}: {report:?}");
        }
        // Users added to an open mount, or all removed from a protected one.
        let open = "[[mount]]\npath = \"/a/\"\norigin = \"rtsp://h/a\"\n";
        assert_eq!(diff(&table(open), &table(USERS)).auth_changed, ["/a"]);
        assert_eq!(diff(&table(USERS), &table(open)).auth_changed, ["/a"]);
        assert_eq!(diff(&table(USERS), &table(USERS)), Report::default());
    }

    #[test]
    fn origin_side_changes_with_user_changes_end_players() {
        let bob = USERS.replace("ann", "bob");
        for (what, new) in [
            ("origin", bob.replace("rtsp://h/a", "rtsp://h/b")),
            (
                "transport",
                bob.replace("[[mount.user]]", "transport = \"tcp\"\n[[mount.user]]"),
            ),
            (
                "origin credentials",
                USERS.replace(
                    "[[mount.user]]",
                    "username = \"o\"\npassword = \"p\"\n[[mount.user]]",
                ),
            ),
        ] {
            let report = diff(&table(USERS), &table(&new));
            assert_eq!(report.changed, ["/a"], "{what}");
            assert!(report.auth_changed.is_empty(), "{what}: {report:?}");
        }
    }

    #[test]
    fn keys_under_a_mount_origin() {
        assert!(key_is_under("rtsp://h:554/a", "rtsp://h:554/a"));
        assert!(key_is_under("rtsp://h:554/a/x", "rtsp://h:554/a"));
        assert!(key_is_under("rtsp://h:554/a?q=1", "rtsp://h:554/a"));
        assert!(!key_is_under("rtsp://h:554/ab", "rtsp://h:554/a"));
    }
}
