//! Keeping secrets out of configuration problems.

/// Keys whose values are secrets (origin passwords, the admin token, HA1
/// digests): never echoed in a problem, which reaches the terminal, the
/// journal and the admin API's reload answer.
const SECRET_KEYS: [&str; 4] = ["password", "token", "md5", "sha256"];

/// Whether the value of `key` (the last part of a dotted key) is a secret.
pub(super) fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

/// The line of `text` that holds byte `offset`.
pub(super) fn line_at(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text.as_bytes()[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = text.as_bytes()[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| offset + i);
    text.get(start..end).unwrap_or_default()
}

/// Whether a line assigns one of the [`SECRET_KEYS`] (`key = value`, also
/// inside an inline table).
pub(super) fn assigns_a_secret(line: &str) -> bool {
    line.split(['{', ',']).any(|part| {
        part.split_once('=')
            .is_some_and(|(key, _)| SECRET_KEYS.contains(&key.trim().trim_matches(['"', '\''])))
    })
}

/// A deserializer message about a secret's line without the values it
/// quotes between backticks ("invalid type: integer `1234`, expected a
/// string", or `1000` for `1e3`): only messages about keys, which quote key
/// names, keep them.
pub(super) fn hide_values(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return message.to_owned();
    }
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "…" } else { part })
        .collect::<Vec<_>>()
        .join("`")
}
