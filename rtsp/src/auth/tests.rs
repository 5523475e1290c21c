use super::*;
use proptest::prelude::*;

#[test]
fn secrets_compare_equal_only_when_identical() {
    assert!(ct_eq(b"secret", b"secret"));
    assert!(!ct_eq(b"secret", b"secreT"));
    assert!(!ct_eq(b"secret", b"secret2"));
    assert!(!ct_eq(b"", b"secret"));
    assert!(ct_eq(b"", b""));
}

fn mufasa() -> Credentials {
    Credentials {
        username: "Mufasa".into(),
        password: "Circle of Life".into(),
    }
}

const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

/// RFC 7616 §3.9.1: both challenges in one (merged) header.
const RFC7616_CHALLENGES: &str = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\", Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

fn response_of(header: &str) -> String {
    let start = header.find("response=\"").unwrap() + 10;
    header[start..start + header[start..].find('"').unwrap()].to_string()
}

#[test]
fn rfc7616_md5_and_sha256_examples() {
    let challenges = parse_challenges(RFC7616_CHALLENGES);
    assert_eq!(challenges.len(), 2);
    let Challenge::Digest(sha) = best_challenge(&challenges).unwrap() else {
        panic!()
    };
    assert_eq!(sha.algorithm, Some(DigestAlgorithm::Sha256));
    assert!(sha.qop_auth);
    assert_eq!(
        sha.opaque.as_deref(),
        Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    );

    let mut auth = ClientAuth::new(challenges[0].clone());
    let h = auth.authorization_with_cnonce(&mufasa(), "GET", "/dir/index.html", RFC7616_CNONCE);
    assert_eq!(
        response_of(&h),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    assert!(
        h.contains("nc=00000001") && h.contains("algorithm=SHA-256") && h.contains("opaque=\"FQhe")
    );

    let mut auth = ClientAuth::new(challenges[1].clone());
    let h = auth.authorization_with_cnonce(&mufasa(), "GET", "/dir/index.html", RFC7616_CNONCE);
    assert_eq!(response_of(&h), "8ca523f5e9506fed4657c9700eebdbec");
    let h2 = auth.authorization_with_cnonce(&mufasa(), "GET", "/dir/index.html", RFC7616_CNONCE);
    assert!(h2.contains("nc=00000002"));
}

#[test]
fn rfc2069_camera_digest_without_qop() {
    // A typical camera challenge: no qop, no algorithm.
    let c = parse_challenges("Digest realm=\"IP Camera(C6357)\", nonce=\"62e0c5ddfd8a0b0ff2b8b7c4c07f4b89\", stale=\"FALSE\"");
    let mut auth = ClientAuth::new(c[0].clone());
    let creds = Credentials {
        username: "admin".into(),
        password: "12345".into(),
    };
    let uri = "rtsp://192.168.1.64:554/Streaming/Channels/101";
    let h = auth.authorization(&creds, "DESCRIBE", uri);
    assert!(!h.contains("qop") && !h.contains("algorithm"), "{h}");
    let ha1 = DigestAlgorithm::Md5.hash("admin:IP Camera(C6357):12345");
    let ha2 = DigestAlgorithm::Md5.hash(&format!("DESCRIBE:{uri}"));
    let want = DigestAlgorithm::Md5.hash(&format!("{ha1}:62e0c5ddfd8a0b0ff2b8b7c4c07f4b89:{ha2}"));
    assert_eq!(response_of(&h), want);
}

#[test]
fn basic_and_mixed_challenges() {
    let c = parse_challenges("Basic realm=\"cam\", Digest realm=\"cam\", nonce=\"abc\"");
    assert_eq!(
        c[0],
        Challenge::Basic {
            realm: "cam".into()
        }
    );
    assert!(matches!(best_challenge(&c), Some(Challenge::Digest(_))));
    let mut auth = ClientAuth::new(c[0].clone());
    // RFC 7617 §2 example.
    let creds = Credentials {
        username: "Aladdin".into(),
        password: "open sesame".into(),
    };
    assert_eq!(
        auth.authorization(&creds, "DESCRIBE", "rtsp://x/"),
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    // Unknown schemes and auth-int-only digests are skipped.
    assert!(
        parse_challenges("Negotiate, Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"").is_empty()
    );
    assert!(parse_challenges("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256").is_empty());
}

#[test]
fn server_verifies_what_the_client_produces() {
    let nonce = hex(&rand::random::<[u8; 16]>());
    for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
        let challenge = digest_challenge("streamcache", &nonce, alg);
        let c = parse_challenges(&challenge);
        let mut auth = ClientAuth::new(c[0].clone());
        let header = auth.authorization(&mufasa(), "PLAY", "rtsp://proxy/x");
        let parsed = Authorization::parse(&header).unwrap();
        assert_eq!(parsed.username(), "Mufasa");
        assert!(parsed.verify("PLAY", "streamcache", &nonce, "Circle of Life"));
        assert!(!parsed.verify("PLAY", "streamcache", &nonce, "wrong"));
        assert!(!parsed.verify("PLAY", "streamcache", "othernonce", "Circle of Life"));
        assert!(!parsed.verify("TEARDOWN", "streamcache", &nonce, "Circle of Life"));
    }
    let c = parse_challenges(&basic_challenge("streamcache"));
    let header = ClientAuth::new(c[0].clone()).authorization(&mufasa(), "PLAY", "rtsp://proxy/x");
    let parsed = Authorization::parse(&header).unwrap();
    assert!(parsed.verify("PLAY", "", "", "Circle of Life"));
    assert!(!parsed.verify("PLAY", "", "", "Circle of Lif"));
    assert!(!format!("{parsed:?}").contains("Circle"));
}

#[test]
fn bad_authorization_headers_are_named() {
    assert_eq!(
        Authorization::parse("Bearer xyz"),
        Err(AuthError::UnsupportedScheme("Bearer".into()))
    );
    assert_eq!(
        Authorization::parse("Basic !!!"),
        Err(AuthError::Missing("Basic credentials"))
    );
    assert_eq!(
        Authorization::parse("Digest username=\"a\""),
        Err(AuthError::Missing("realm"))
    );
    assert!(!format!("{:?}", mufasa()).contains("Circle"));
    let digest = |extra: &str| {
        Authorization::parse(&format!(
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"/\", response=\"0\", nc=00000001, cnonce=\"c\", {extra}"
        ))
    };
    for (extra, what, value) in [
        ("algorithm=MD5-sess", "algorithm", "MD5-sess"),
        ("ALGORITHM=sha-256-SESS", "algorithm", "sha-256-SESS"),
        ("qop=auth-int", "qop", "auth-int"),
    ] {
        assert_eq!(
            digest(extra),
            Err(AuthError::Unsupported(what, value.into())),
            "{extra}"
        );
    }
    // Parameter names and algorithm names are case-insensitive.
    let Ok(Authorization::Digest { algorithm, .. }) = digest("Algorithm=sha-256, QOP=\"auth\"")
    else {
        panic!("parses")
    };
    assert_eq!(algorithm, DigestAlgorithm::Sha256);
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,120}") {
        let _ = parse_challenges(&s);
        let _ = Authorization::parse(&s);
    }

    #[test]
    fn quoted_values_round_trip(realm in "[ -~]{0,30}", nonce in "[ -~]{1,30}") {
        let c = parse_challenges(&digest_challenge(&realm, &nonce, DigestAlgorithm::Md5));
        prop_assert_eq!(c.len(), 1);
        let Challenge::Digest(d) = &c[0] else { panic!() };
        prop_assert_eq!(&d.realm, &realm);
        prop_assert_eq!(&d.nonce, &nonce);
    }
}
