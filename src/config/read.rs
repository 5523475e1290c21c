//! Reading a parsed file into a [`Config`] key by key.
//!
//! serde's derive stops at the first unknown key, wrong type or bad value, so
//! a file with ten mistakes would take ten runs of `check-config`. Instead
//! the document is walked against the schema: every key is deserialized on
//! its own (with its span, so that `Spanned` fields still work), every
//! mistake is recorded with its dotted key and line, and reading goes on.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer as _};
use toml_edit::{Item, TableLike, Value};

use super::secrets::{hide_values, is_secret_key};
use super::*;

/// Where each dotted key (`rtsp.listen`, `mount[2]`, `mount[2].user[0].md5`)
/// is written in the file, for the line of a value problem.
pub(super) type Spans = HashMap<String, Range<usize>>;

/// What reading a document found.
pub(super) struct Reading {
    pub config: Config,
    pub spans: Spans,
    pub problems: Vec<Problem>,
    /// Keys already reported (unreadable or missing): their placeholder
    /// values are not checked again.
    pub failed: HashSet<String>,
}

impl Reading {
    /// Whether `key` is, or lies under, a key already reported.
    pub fn already_reported(&self, key: &str) -> bool {
        self.failed.iter().any(|f| {
            key.strip_prefix(f.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }
}

/// Reads every section of a parsed document.
pub(super) fn read(text: &str, root: &toml_edit::Table) -> Reading {
    let mut reader = Reader {
        text,
        spans: Spans::new(),
        problems: Vec::new(),
        failed: HashSet::new(),
    };
    let config = reader.config(&Section {
        path: String::new(),
        table: root,
        span: None,
    });
    Reading {
        config,
        spans: reader.spans,
        problems: reader.problems,
        failed: reader.failed,
    }
}

/// A table of the file: its dotted path and where it starts.
struct Section<'a> {
    path: String,
    table: &'a dyn TableLike,
    span: Option<Range<usize>>,
}

impl Section<'_> {
    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

struct Reader<'t> {
    text: &'t str,
    spans: Spans,
    problems: Vec<Problem>,
    failed: HashSet<String>,
}

/// Reads the listed fields of `$target` from `$section` (those absent keep
/// their defaults) and reports every other key of the section as unknown;
/// `extra` names keys read separately (sub-tables).
macro_rules! read_fields {
    ($reader:expr, $section:expr, $target:expr, [$($field:ident),* $(,)?] $(, extra: [$($extra:literal),*])?) => {{
        $(
            if let Some(value) = $reader.value(&$section, stringify!($field)) {
                $target.$field = value;
            }
        )*
        $reader.unknown_keys(&$section, &[$(stringify!($field),)* $($($extra),*)?]);
    }};
}

impl<'t> Reader<'t> {
    fn problem(&mut self, span: Option<Range<usize>>, key: String, message: String) {
        self.problems.push(Problem {
            line: span.map(|s| check::line_of(self.text, s.start)),
            key: key.clone(),
            message,
        });
        self.failed.insert(key);
    }

    fn config(&mut self, root: &Section) -> Config {
        let mut config = Config::default();
        if let Some(s) = self.section(root, "rtsp") {
            read_fields!(
                self,
                s,
                config.rtsp,
                [
                    listen,
                    session_timeout_secs,
                    max_request_bytes,
                    max_headers,
                    player_queue_packets,
                    max_sessions,
                    max_sessions_per_ip,
                    max_connections,
                    idle_connection_secs,
                    merge_writes_ms,
                    relay_merge_writes_ms,
                ]
            );
        }
        if let Some(s) = self.section(root, "cache") {
            read_fields!(
                self,
                s,
                config.cache,
                [
                    dir,
                    disk_budget,
                    segment_size,
                    segment_secs,
                    default_fresh_secs
                ]
            );
        }
        if let Some(s) = self.section(root, "origin") {
            read_fields!(
                self,
                s,
                config.origin,
                [
                    connect_timeout_secs,
                    udp_fallback_secs,
                    linger_secs,
                    reconnect_attempts
                ]
            );
        }
        if let Some(s) = self.section(root, "admin") {
            read_fields!(self, s, config.admin, [listen, token]);
        }
        if let Some(s) = self.section(root, "http") {
            read_fields!(self, s, config.http, [listen, segment_cache]);
        }
        if let Some(s) = self.section(root, "log") {
            read_fields!(self, s, config.log, [level]);
        }
        if let Some(s) = self.section(root, "sample_origin") {
            read_fields!(self, s, config.sample_origin, [listen]);
        }
        if let Some(s) = self.section(root, "master") {
            let mut master = MasterConfig::default();
            read_fields!(
                self,
                s,
                master,
                [
                    listen,
                    control_listen,
                    token,
                    report_period_ms,
                    down_after_polls,
                    egress_window_secs,
                    prepare_timeout_ms,
                    player_bitrate_bps,
                    retry_after_secs,
                    copy_link_bps,
                    copy_cluster_bps,
                    copy_faulty_after,
                    copy_failure_window_secs,
                ]
            );
            self.require(&s, &["token"]);
            config.master = Some(master);
        }
        if let Some(s) = self.section(root, "cluster") {
            let mut cluster = ClusterConfig::default();
            read_fields!(
                self,
                s,
                cluster,
                [
                    master,
                    node_id,
                    rtsp_url,
                    token,
                    max_sessions,
                    max_egress_bps,
                    peer_listen,
                    peer_url,
                    max_copy_egress_bps,
                    max_copy_ingress_bps,
                ]
            );
            self.require(&s, &["master", "node_id", "token"]);
            config.cluster = Some(cluster);
        }
        for s in self.array_of_tables(root, "mount") {
            // A placeholder keeps the indices of the next mounts; its own
            // problems lie under the reported `mount[i]`.
            config.mounts.push(match s {
                Some(s) => self.mount(&s),
                None => placeholder_mount(),
            });
        }
        self.unknown_keys(
            root,
            &[
                "rtsp",
                "cache",
                "origin",
                "admin",
                "http",
                "log",
                "sample_origin",
                "master",
                "cluster",
                "mount",
            ],
        );
        config
    }

    fn mount(&mut self, s: &Section) -> MountConfig {
        let mut mount = placeholder_mount();
        read_fields!(
            self,
            s,
            mount,
            [path, origin, transport, username, password, realm, auth_schemes],
            extra: ["user"]
        );
        self.require(s, &["path", "origin"]);
        for user_section in self.array_of_tables(s, "user") {
            let mut user = MountUserConfig {
                name: Spanned::new(0..0, String::new()),
                md5: None,
                sha256: None,
            };
            if let Some(user_section) = user_section {
                read_fields!(self, user_section, user, [name, md5, sha256]);
                self.require(&user_section, &["name"]);
            }
            mount.users.push(user);
        }
        mount
    }

    /// The value of `key` in `s`, if it is there and of the right type;
    /// otherwise the problem is recorded.
    fn value<T: DeserializeOwned>(&mut self, s: &Section, key: &str) -> Option<T> {
        let (k, item) = s.table.get_key_value(key)?;
        let dotted = s.child(key);
        let span = item.span().or_else(|| k.span());
        if let Some(span) = &span {
            self.spans.insert(dotted.clone(), span.clone());
        }
        let Item::Value(value) = item else {
            self.problem(span, dotted, "expected a value, not a table".into());
            return None;
        };
        match T::deserialize(value.clone().into_deserializer()) {
            Ok(v) => Some(v),
            Err(e) => {
                let message = e.message().trim();
                // A wrong type quotes the value: never a secret's.
                let message = if is_secret_key(key) {
                    hide_values(message)
                } else {
                    message.to_owned()
                };
                self.problem(e.span().or(span), dotted, message);
                None
            }
        }
    }

    /// Reports the `keys` that `s` lacks.
    fn require(&mut self, s: &Section, keys: &[&str]) {
        for key in keys {
            if !s.table.contains_key(key) {
                self.problem(
                    s.span.clone(),
                    s.child(key),
                    format!("missing field `{key}`"),
                );
            }
        }
    }

    /// Reports every key of `s` not in `known`.
    fn unknown_keys(&mut self, s: &Section, known: &[&str]) {
        let expected = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for (key, item) in s.table.iter() {
            if !known.contains(&key) {
                let span = s
                    .table
                    .key(key)
                    .and_then(|k| k.span())
                    .or_else(|| item.span());
                self.problem(
                    span,
                    s.child(key),
                    format!("unknown field `{key}`, expected one of {expected}"),
                );
            }
        }
    }

    /// The table `[key]` (or `key = { … }`) of `parent`, when present.
    fn section<'a>(&mut self, parent: &Section<'a>, key: &str) -> Option<Section<'a>> {
        let (k, item) = parent.table.get_key_value(key)?;
        let path = parent.child(key);
        let span = item.span().or_else(|| k.span());
        if let Some(span) = &span {
            self.spans.insert(path.clone(), span.clone());
        }
        match item.as_table_like() {
            Some(table) => Some(Section { path, table, span }),
            None => {
                self.problem(span, path, "expected a table".into());
                None
            }
        }
    }

    /// The tables `[[key]]` (or `key = [{ … }, …]`) of `parent`, each named
    /// `key[i]`. An element that is not a table is reported and stands as
    /// `None`, so that the next ones keep their indices.
    fn array_of_tables<'a>(&mut self, parent: &Section<'a>, key: &str) -> Vec<Option<Section<'a>>> {
        let Some((k, item)) = parent.table.get_key_value(key) else {
            return Vec::new();
        };
        let path = parent.child(key);
        let tables: Vec<Element<'a>> = match item {
            Item::ArrayOfTables(array) => array
                .iter()
                .map(|t| (t.span(), Some(t as &dyn TableLike)))
                .collect(),
            Item::Value(Value::Array(array)) => array
                .iter()
                .map(|v| (v.span(), v.as_inline_table().map(|t| t as &dyn TableLike)))
                .collect(),
            _ => {
                let span = item.span().or_else(|| k.span());
                self.problem(span, path, "expected an array of tables".into());
                return Vec::new();
            }
        };
        let mut sections = Vec::new();
        for (i, (span, table)) in tables.into_iter().enumerate() {
            let path = format!("{path}[{i}]");
            let span = span.or_else(|| first_key_span(table));
            if let Some(span) = &span {
                self.spans.insert(path.clone(), span.clone());
            }
            match table {
                Some(table) => sections.push(Some(Section { path, table, span })),
                None => {
                    self.problem(span, path, "expected a table".into());
                    sections.push(None);
                }
            }
        }
        sections
    }
}

/// An element of an array of tables: where it is, and the table unless it
/// is something else.
type Element<'a> = (Option<Range<usize>>, Option<&'a dyn TableLike>);

/// A mount before its keys are read; what is missing is reported.
fn placeholder_mount() -> MountConfig {
    MountConfig {
        path: Spanned::new(0..0, String::new()),
        origin: Spanned::new(0..0, String::new()),
        transport: MountTransport::default(),
        username: None,
        password: None,
        realm: None,
        auth_schemes: None,
        users: Vec::new(),
    }
}

/// Where a table without a span of its own (an implicit one) starts.
fn first_key_span(table: Option<&dyn TableLike>) -> Option<Range<usize>> {
    table?
        .iter()
        .filter_map(|(key, item)| {
            table
                .and_then(|t| t.key(key))
                .and_then(|k| k.span())
                .or_else(|| item.span())
        })
        .min_by_key(|span| span.start)
}
