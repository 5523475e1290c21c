//! What serde cannot check: values, URLs, mount prefixes and player
//! accounts, each problem with its key and line.

use super::*;

impl Config {
    /// What serde cannot check. `text` is the source, for line numbers.
    pub(super) fn problems(&self, text: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
            out.push(Problem {
                line: span.filter(|s| s.end > 0).map(|s| line_of(text, s.start)),
                key,
                message,
            })
        };
        if self.rtsp.listen_addr().is_none() {
            problem(
                Some(self.rtsp.listen.span()),
                "rtsp.listen".into(),
                format!(
                    "`{}` is not an address:port (e.g. \"127.0.0.1:8554\")",
                    self.rtsp.listen.get_ref()
                ),
            );
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.rtsp.session_timeout_secs) {
            problem(
                None,
                "rtsp.session_timeout_secs".into(),
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        if self.rtsp.max_request_bytes.0 < 1024 {
            problem(
                None,
                "rtsp.max_request_bytes".into(),
                "must be at least 1KiB".into(),
            );
        }
        if self.rtsp.max_headers == 0 || self.rtsp.player_queue_packets == 0 {
            problem(
                None,
                "rtsp".into(),
                "max_headers and player_queue_packets must be > 0".into(),
            );
        }
        for (key, value) in [
            ("max_sessions", &self.rtsp.max_sessions),
            ("max_sessions_per_ip", &self.rtsp.max_sessions_per_ip),
            ("max_connections", &self.rtsp.max_connections),
        ] {
            if *value.get_ref() == 0 {
                problem(
                    Some(value.span()),
                    format!("rtsp.{key}"),
                    "must be > 0".into(),
                );
            }
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(self.rtsp.idle_connection_secs.get_ref()) {
            problem(
                Some(self.rtsp.idle_connection_secs.span()),
                "rtsp.idle_connection_secs".into(),
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        if self.cache.segment_size.0 < 64 * 1024 {
            problem(
                None,
                "cache.segment_size".into(),
                "must be at least 64KiB".into(),
            );
        }
        if self.cache.segment_size.0 > self.cache.disk_budget.0 {
            problem(
                None,
                "cache.disk_budget".into(),
                "must be at least one segment_size".into(),
            );
        }
        if self.origin.connect_timeout_secs == 0 || self.origin.udp_fallback_secs == 0 {
            problem(
                None,
                "origin".into(),
                "connect_timeout_secs and udp_fallback_secs must be > 0".into(),
            );
        }
        if self.origin.linger_secs > MAX_TIMEOUT_SECS {
            problem(
                None,
                "origin.linger_secs".into(),
                format!("must be at most {MAX_TIMEOUT_SECS}"),
            );
        }
        let sample_listen = self.sample_origin.listen.get_ref();
        if !sample_listen.is_empty() && self.sample_origin.listen_addr().is_none() {
            problem(
                Some(self.sample_origin.listen.span()),
                "sample_origin.listen".into(),
                format!("`{sample_listen}` is not an address:port (e.g. \"127.0.0.1:8654\"), or \"\" not to run it"),
            );
        }
        let admin_listen = self.admin.listen.get_ref();
        if !admin_listen.is_empty() && self.admin.listen_addr().is_none() {
            problem(
                Some(self.admin.listen.span()),
                "admin.listen".into(),
                format!("`{admin_listen}` is not an address:port (e.g. \"127.0.0.1:8555\"), or \"\" to disable"),
            );
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            problem(
                None,
                "admin.token".into(),
                "must not be empty (leave the key out for no token)".into(),
            );
        } else if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.trim() != t || !t.chars().all(|c| c.is_ascii_graphic() || c == ' '))
        {
            // A client cannot send anything else in an HTTP header: such a
            // token would lock everyone out. Never echo it.
            problem(
                None,
                "admin.token".into(),
                "must be printable ASCII, without spaces around it (it is sent as `Authorization: Bearer <token>`)".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problem(
                None,
                "log.level".into(),
                format!("`{}` is not a log filter: {e}", self.log.level),
            );
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            let path = mount.path.get_ref();
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                problem(
                    Some(mount.path.span()),
                    format!("mount[{i}].path"),
                    format!("`{path}` must be an absolute URL path such as \"/cams/front\""),
                );
            }
            if let Some(j) = self.mounts[..i]
                .iter()
                .position(|m| trim_slash(m.path.get_ref()) == trim_slash(path))
            {
                problem(
                    Some(mount.path.span()),
                    format!("mount[{i}].path"),
                    format!("`{path}` is already mounted by mount[{j}]"),
                );
            }
            if let Err(msg) = check_origin_url(mount.origin.get_ref()) {
                problem(Some(mount.origin.span()), format!("mount[{i}].origin"), msg);
            }
            if mount.password.is_some() && mount.username.is_none() {
                problem(
                    Some(mount.path.span()),
                    format!("mount[{i}].password"),
                    "a password needs a username".into(),
                );
            }
            for (span, key, message) in mount_auth_problems(mount) {
                problem(span, format!("mount[{i}].{key}"), message);
            }
        }
        out
    }
}

/// What is wrong with a mount's player authentication keys.
fn mount_auth_problems(
    mount: &MountConfig,
) -> Vec<(Option<std::ops::Range<usize>>, String, String)> {
    let mut out = Vec::new();
    let bad_text =
        |s: &str| s.is_empty() || s.chars().any(|c| c.is_control() || c == '"' || c == '\\');
    if let Some(realm) = &mount.realm {
        if bad_text(realm.get_ref()) {
            out.push((
                Some(realm.span()),
                "realm".into(),
                "must be non-empty, without quotes, backslashes or control characters".into(),
            ));
        }
    }
    if let Some(schemes) = &mount.auth_schemes {
        let list = schemes.get_ref();
        if list.is_empty() {
            out.push((
                Some(schemes.span()),
                "auth_schemes".into(),
                "must name at least one of \"basic\", \"digest\"".into(),
            ));
        }
        for (j, scheme) in list.iter().enumerate() {
            if scheme != "basic" && scheme != "digest" {
                out.push((
                    Some(schemes.span()),
                    "auth_schemes".into(),
                    format!("`{scheme}` is not \"basic\" or \"digest\""),
                ));
            } else if list[..j].contains(scheme) {
                out.push((
                    Some(schemes.span()),
                    "auth_schemes".into(),
                    format!("`{scheme}` is listed twice"),
                ));
            }
        }
    }
    if mount.users.is_empty() && (mount.realm.is_some() || mount.auth_schemes.is_some()) {
        let span = mount
            .realm
            .as_ref()
            .map(|r| r.span())
            .or_else(|| mount.auth_schemes.as_ref().map(|s| s.span()));
        out.push((
            span,
            "user".into(),
            "realm/auth_schemes are set but no [[mount.user]] is: the mount would be open to anyone".into(),
        ));
    }
    for (j, user) in mount.users.iter().enumerate() {
        let name = user.name.get_ref();
        if bad_text(name) || name.contains(':') {
            out.push((
                Some(user.name.span()),
                format!("user[{j}].name"),
                "must be non-empty, without `:`, quotes, backslashes or control characters".into(),
            ));
        }
        if mount.users[..j].iter().any(|u| u.name.get_ref() == name) {
            out.push((
                Some(user.name.span()),
                format!("user[{j}].name"),
                format!("user `{name}` is listed twice"),
            ));
        }
        if user.md5.is_none() && user.sha256.is_none() {
            out.push((
                Some(user.name.span()),
                format!("user[{j}]"),
                "needs md5 and/or sha256 (the output of `streamcache hash-password`)".into(),
            ));
        }
        for (key, secret, digits) in [("md5", &user.md5, 32), ("sha256", &user.sha256, 64)] {
            if let Some(secret) = secret {
                let text = secret.get_ref();
                if text.len() != digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                    // Never echo the value: it may be a pasted password.
                    out.push((
                        Some(secret.span()),
                        format!("user[{j}].{key}"),
                        format!("must be {digits} hex digits, H(user:realm:password) as printed by `streamcache hash-password`"),
                    ));
                }
            }
        }
    }
    out
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
