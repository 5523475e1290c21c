//! Fuzz the header parsers: Transport, Range, RTP-Info, Session,
//! WWW-Authenticate and Authorization (and the server's verdict on it, nonce
//! included). None may panic; what parses must format into something that
//! parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcache_rtsp::auth::{
    parse_challenges, AuthRequest, Authorization, NonceKey, ServerAuth, UserSecret,
};
use streamcache_rtsp::range::{format_rtp_info, parse_rtp_info, PlayRange, SessionHeader};
use streamcache_rtsp::transport::{parse_list, TransportSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    for spec in parse_list(value).into_iter().flatten() {
        TransportSpec::parse(&spec.to_string()).expect("formatted Transport parses");
    }
    if let Ok(range) = PlayRange::parse(value) {
        PlayRange::parse(&range.to_string()).expect("formatted Range parses");
    }
    if let Ok(infos) = parse_rtp_info(value) {
        let _ = parse_rtp_info(&format_rtp_info(&infos));
    }
    if let Ok(session) = SessionHeader::parse(value) {
        SessionHeader::parse(&session.to_string()).expect("formatted Session parses");
    }
    let _ = parse_challenges(value);
    let _ = Authorization::parse(value);
    let key = NonceKey::from_bytes([1; 32]);
    let _ = key.check(value, 1_000, "r", "127.0.0.1");
    let user = UserSecret {
        name: "u".into(),
        md5: Some("0".repeat(32)),
        sha256: Some("0".repeat(64)),
    };
    let guard = ServerAuth::new("r", true, true, vec![user]);
    let _ = guard.check(
        &key,
        AuthRequest {
            authorization: Some(value),
            method: "DESCRIBE",
            uri: "rtsp://h/x",
            client: "127.0.0.1",
            now: 1_000,
        },
    );
});
