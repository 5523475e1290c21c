//! What reading the file cannot check: values, URLs, mount prefixes and
//! player accounts, each problem with its key and the line of that key.

use super::read::Spans;
use super::*;

/// Value problems being collected, each given the line of its key.
pub(super) struct Found<'a> {
    text: &'a str,
    pub(super) spans: &'a Spans,
    out: Vec<Problem>,
}

impl Found<'_> {
    /// A problem of `key`, on the line of `key`.
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let at = key.clone();
        self.add_at(key, &at, message);
    }

    /// A problem of `key`, on the line of `at` or, when `at` is not written
    /// in the file (a default), of the nearest table around it.
    fn add_at(&mut self, key: impl Into<String>, at: &str, message: impl Into<String>) {
        let mut at = at;
        let span = loop {
            if let Some(span) = self.spans.get(at) {
                break Some(span);
            }
            match at.rfind(['.', '[']) {
                Some(end) => at = &at[..end],
                None => break None,
            }
        };
        self.out.push(Problem {
            line: span.map(|s| line_of(self.text, s.start)),
            key: key.into(),
            message: message.into(),
        });
    }
}

impl Config {
    /// What reading cannot check: values and how they fit together.
    /// `text` is the source and `spans` where each key is in it, for lines.
    pub(super) fn problems(&self, text: &str, spans: &Spans) -> Vec<Problem> {
        let mut found = Found {
            text,
            spans,
            out: Vec::new(),
        };
        self.rtsp.problems(&mut found);
        self.cache.problems(&mut found);
        let origin = &self.origin;
        for (key, value) in [
            ("connect_timeout_secs", origin.connect_timeout_secs),
            ("udp_fallback_secs", origin.udp_fallback_secs),
        ] {
            if value == 0 {
                found.add(format!("origin.{key}"), "must be > 0");
            }
        }
        if origin.linger_secs > MAX_TIMEOUT_SECS {
            found.add(
                "origin.linger_secs",
                format!("must be at most {MAX_TIMEOUT_SECS}"),
            );
        }
        let sample_listen = self.sample_origin.listen.get_ref();
        if !sample_listen.is_empty() && self.sample_origin.listen_addr().is_none() {
            found.add(
                "sample_origin.listen",
                format!("`{sample_listen}` is not an address:port (e.g. \"127.0.0.1:8654\"), or \"\" not to run it"),
            );
        }
        self.admin.problems(&mut found);
        self.http.problems(&mut found);
        if let Some(master) = &self.master {
            master.problems(&mut found);
        }
        if let Some(cluster) = &self.cluster {
            cluster.problems(&mut found, self.rtsp.listen_addr());
        }
        if self.master.is_some() && self.cluster.is_some() {
            found.add(
                "cluster",
                "a process is either the master ([master]) or a node ([cluster]), not both",
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            found.add(
                "log.level",
                format!("`{}` is not a log filter: {e}", self.log.level),
            );
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            let key = |k: &str| format!("mount[{i}].{k}");
            let path = mount.path.get_ref();
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                found.add(
                    key("path"),
                    format!("`{path}` must be an absolute URL path such as \"/cams/front\""),
                );
            }
            if let Some(j) = self.mounts[..i]
                .iter()
                .position(|m| trim_slash(m.path.get_ref()) == trim_slash(path))
            {
                found.add(
                    key("path"),
                    format!("`{path}` is already mounted by mount[{j}]"),
                );
            }
            if let Err(msg) = check_origin_url(mount.origin.get_ref()) {
                found.add(key("origin"), msg);
            }
            if mount.password.is_some() && mount.username.is_none() {
                found.add(key("password"), "a password needs a username");
            }
            mount_auth_problems(mount, &format!("mount[{i}]"), &mut found);
        }
        found.out
    }
}

impl RtspConfig {
    fn problems(&self, found: &mut Found) {
        if self.listen_addr().is_none() {
            found.add(
                "rtsp.listen",
                format!(
                    "`{}` is not an address:port (e.g. \"127.0.0.1:8554\")",
                    self.listen.get_ref()
                ),
            );
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.session_timeout_secs) {
            found.add(
                "rtsp.session_timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        if self.max_request_bytes.0 < 1024 {
            found.add("rtsp.max_request_bytes", "must be at least 1KiB");
        }
        for (key, value) in [
            ("max_headers", self.max_headers),
            ("player_queue_packets", self.player_queue_packets),
            ("max_sessions", *self.max_sessions.get_ref()),
            ("max_sessions_per_ip", *self.max_sessions_per_ip.get_ref()),
            ("max_connections", *self.max_connections.get_ref()),
        ] {
            if value == 0 {
                found.add(format!("rtsp.{key}"), "must be > 0");
            }
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(self.idle_connection_secs.get_ref()) {
            found.add(
                "rtsp.idle_connection_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        for (key, ms) in [
            ("rtsp.merge_writes_ms", self.merge_writes_ms),
            ("rtsp.relay_merge_writes_ms", self.relay_merge_writes_ms),
        ] {
            if ms > MAX_MERGE_WRITES_MS {
                found.add(key, format!("must be between 0 and {MAX_MERGE_WRITES_MS}"));
            }
        }
    }
}

impl CacheConfig {
    fn problems(&self, found: &mut Found) {
        if self.segment_size.0 < 64 * 1024 {
            found.add("cache.segment_size", "must be at least 64KiB");
        }
        if self.segment_size.0 > self.disk_budget.0 {
            // On the line of whichever of the two is written.
            let at = if found.spans.contains_key("cache.disk_budget") {
                "cache.disk_budget"
            } else {
                "cache.segment_size"
            };
            found.add_at("cache.disk_budget", at, "must be at least one segment_size");
        }
    }
}

impl AdminConfig {
    fn problems(&self, found: &mut Found) {
        let listen = self.listen.get_ref();
        if !listen.is_empty() && self.listen_addr().is_none() {
            found.add(
                "admin.listen",
                format!("`{listen}` is not an address:port (e.g. \"127.0.0.1:8555\"), or \"\" to disable"),
            );
        }
        let Some(token) = &self.token else { return };
        if token.trim().is_empty() {
            found.add(
                "admin.token",
                "must not be empty (leave the key out for no token)",
            );
        } else if token.trim() != token || !token.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            // A client cannot send anything else in an HTTP header: such a
            // token would lock everyone out. Never echo it.
            found.add(
                "admin.token",
                "must be printable ASCII, without spaces around it (it is sent as `Authorization: Bearer <token>`)",
            );
        }
    }
}

/// What is wrong with a mount's player authentication keys; `at` is the
/// mount's dotted key (`mount[2]`).
fn mount_auth_problems(mount: &MountConfig, at: &str, found: &mut Found) {
    let key = |k: &str| format!("{at}.{k}");
    let bad_text =
        |s: &str| s.is_empty() || s.chars().any(|c| c.is_control() || c == '"' || c == '\\');
    if mount.realm.as_ref().is_some_and(|r| bad_text(r.get_ref())) {
        found.add(
            key("realm"),
            "must be non-empty, without quotes, backslashes or control characters",
        );
    }
    if let Some(schemes) = &mount.auth_schemes {
        let list = schemes.get_ref();
        if list.is_empty() {
            found.add(
                key("auth_schemes"),
                "must name at least one of \"basic\", \"digest\"",
            );
        }
        for (j, scheme) in list.iter().enumerate() {
            if scheme != "basic" && scheme != "digest" {
                found.add(
                    key("auth_schemes"),
                    format!("`{scheme}` is not \"basic\" or \"digest\""),
                );
            } else if list[..j].contains(scheme) {
                found.add(key("auth_schemes"), format!("`{scheme}` is listed twice"));
            }
        }
    }
    if mount.users.is_empty() && (mount.realm.is_some() || mount.auth_schemes.is_some()) {
        // On the line of the key that asks for authentication.
        let asking = if mount.realm.is_some() {
            "realm"
        } else {
            "auth_schemes"
        };
        found.add_at(
            key("user"),
            &key(asking),
            "realm/auth_schemes are set but no [[mount.user]] is: the mount would be open to anyone",
        );
    }
    for (j, user) in mount.users.iter().enumerate() {
        let user_key = |k: &str| key(&format!("user[{j}]{k}"));
        let name = user.name.get_ref();
        if bad_text(name) || name.contains(':') {
            found.add(
                user_key(".name"),
                "must be non-empty, without `:`, quotes, backslashes or control characters",
            );
        }
        if mount.users[..j].iter().any(|u| u.name.get_ref() == name) {
            found.add(user_key(".name"), format!("user `{name}` is listed twice"));
        }
        // A digest written but unreadable is reported as such already.
        let written = |k: &str| found.spans.contains_key(&user_key(k));
        if user.md5.is_none() && user.sha256.is_none() && !written(".md5") && !written(".sha256") {
            found.add_at(
                user_key(""),
                &user_key(".name"),
                "needs md5 and/or sha256 (the output of `streamcache hash-password`)",
            );
        }
        for (k, secret, digits) in [("md5", &user.md5, 32), ("sha256", &user.sha256, 64)] {
            if let Some(secret) = secret {
                let text = secret.get_ref();
                if text.len() != digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                    // Never echo the value: it may be a pasted password.
                    found.add(
                        user_key(&format!(".{k}")),
                        format!("must be {digits} hex digits, H(user:realm:password) as printed by `streamcache hash-password`"),
                    );
                }
            }
        }
    }
}

fn check_origin_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if url.scheme() != "rtsp" {
        return Err(format!(
            "origin must be an rtsp:// URL, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none() {
        return Err("origin URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs; they have their own keys.
        return Err("put origin credentials in `username`/`password`, not in the URL".into());
    }
    Ok(())
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
