//! Reading `a=fmtp` parameters: `key=value` pairs separated by `;`, keys
//! case-insensitive (RFC 4566 leaves them to each payload format; all of
//! ours treat them so).

use base64::Engine as _;
use bytes::Bytes;

/// The value of parameter `key`, trimmed.
pub(super) fn param<'a>(fmtp: Option<&'a str>, key: &str) -> Option<&'a str> {
    fmtp?.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// A numeric parameter; `None` if absent or not a number.
pub(super) fn number(fmtp: Option<&str>, key: &str) -> Option<u32> {
    param(fmtp, key)?.parse().ok()
}

/// Hexadecimal bytes (`config=`), `None` if malformed.
pub(super) fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Comma-separated base64 NAL units (`sprop-parameter-sets`,
/// `sprop-vps`...). Malformed or empty entries are skipped: a bad SDP
/// attribute leaves the parameter sets to come in band.
pub(super) fn base64_list(text: &str) -> Vec<Bytes> {
    text.split(',')
        .filter_map(|item| {
            base64::engine::general_purpose::STANDARD
                .decode(item.trim())
                .ok()
        })
        .filter(|nal| !nal.is_empty())
        .map(Bytes::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parameters() {
        let f = Some("packetization-mode=1; Sprop-Parameter-Sets=Z0IA,aM4=;config=1190");
        assert_eq!(param(f, "sprop-parameter-sets"), Some("Z0IA,aM4="));
        assert_eq!(number(f, "packetization-mode"), Some(1));
        assert_eq!(param(f, "missing"), None);
        assert_eq!(hex("1190"), Some(vec![0x11, 0x90]));
        assert_eq!(hex("119"), None);
        assert_eq!(hex("zz"), None);
        assert_eq!(hex("é1"), None);
        assert_eq!(
            base64_list("Z0IA,!!,aM4="),
            [&[0x67, 0x42, 0][..], &[0x68, 0xce]]
        );
    }
}
