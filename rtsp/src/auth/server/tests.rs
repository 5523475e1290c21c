use super::super::{parse_challenges, Challenge, ClientAuth, Credentials};
use super::*;

const REALM: &str = "http-auth@example.org";

fn key() -> NonceKey {
    NonceKey::from_bytes([7; 32])
}

fn mufasa() -> UserSecret {
    UserSecret {
        name: "Mufasa".into(),
        md5: Some(ha1(DigestAlgorithm::Md5, "Mufasa", REALM, "Circle of Life")),
        sha256: Some(ha1(
            DigestAlgorithm::Sha256,
            "Mufasa",
            REALM,
            "Circle of Life",
        )),
    }
}

fn guard(basic: bool, digest: bool) -> ServerAuth {
    ServerAuth::new(REALM, basic, digest, vec![mufasa()])
}

fn request<'a>(authorization: Option<&'a str>, now: u64) -> AuthRequest<'a> {
    AuthRequest {
        authorization,
        method: "DESCRIBE",
        uri: "rtsp://proxy/cams/x",
        client: "192.0.2.7",
        now,
    }
}

fn challenges_of(verdict: &Verdict) -> Vec<String> {
    match verdict {
        Verdict::Refused { challenges, .. } => challenges.clone(),
        Verdict::Allowed(user) => panic!("allowed {user}"),
    }
}

fn why(verdict: &Verdict) -> Denied {
    match verdict {
        Verdict::Refused { why, .. } => why.clone(),
        Verdict::Allowed(user) => panic!("allowed {user}"),
    }
}

/// Answers `challenge` as a player would.
fn answer(challenge: &str, password: &str, method: &str, uri: &str) -> String {
    let c = parse_challenges(challenge);
    ClientAuth::new(c[0].clone()).authorization(
        &Credentials {
            username: "Mufasa".into(),
            password: password.into(),
        },
        method,
        uri,
    )
}

#[test]
fn hmac_matches_rfc4231_case_2() {
    let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
    assert_eq!(
        hex(&mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn rfc7616_vectors_verify_from_stored_ha1() {
    // RFC 7616 §3.9.1: the player's responses, checked from HA1 alone.
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    for (alg, name, response) in [
        (
            DigestAlgorithm::Md5,
            "MD5",
            "8ca523f5e9506fed4657c9700eebdbec",
        ),
        (
            DigestAlgorithm::Sha256,
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let header = format!(
            "Digest username=\"Mufasa\", realm=\"{REALM}\", uri=\"/dir/index.html\", algorithm={name}, nonce=\"{nonce}\", nc=00000001, cnonce=\"{cnonce}\", qop=auth, response=\"{response}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        );
        let auth = Authorization::parse(&header).unwrap();
        let stored = mufasa().ha1(alg).unwrap().to_owned();
        assert!(auth.digest_matches("GET", &stored), "{name}");
        assert!(!auth.digest_matches("POST", &stored), "{name}");
        let other = ha1(alg, "Mufasa", REALM, "Circle of Death");
        assert!(!auth.digest_matches("GET", &other), "{name}");
    }
}

#[test]
fn missing_credentials_get_every_challenge_strongest_first() {
    let verdict = guard(true, true).check(&key(), request(None, 1000));
    assert_eq!(why(&verdict), Denied::NoCredentials);
    let challenges = challenges_of(&verdict);
    assert_eq!(challenges.len(), 3, "{challenges:?}");
    assert!(challenges[0].contains("algorithm=SHA-256") && challenges[0].contains("qop=\"auth\""));
    assert!(challenges[1].contains("algorithm=MD5"));
    assert_eq!(challenges[2], format!("Basic realm=\"{REALM}\""));
    assert!(!challenges[0].contains("stale"));
    // Only the algorithms some user has a secret for are offered.
    let md5_only = UserSecret {
        sha256: None,
        ..mufasa()
    };
    let verdict =
        ServerAuth::new(REALM, false, true, vec![md5_only]).check(&key(), request(None, 1));
    let challenges = challenges_of(&verdict);
    assert_eq!(challenges.len(), 1);
    assert!(challenges[0].contains("algorithm=MD5"));
}

#[test]
fn digest_round_trip_both_algorithms() {
    let g = guard(false, true);
    for challenge in challenges_of(&g.check(&key(), request(None, 1000))) {
        let header = answer(
            &challenge,
            "Circle of Life",
            "DESCRIBE",
            "rtsp://proxy/cams/x",
        );
        assert_eq!(
            g.check(&key(), request(Some(&header), 1010)),
            Verdict::Allowed("Mufasa".into()),
            "{challenge}"
        );
        let wrong = answer(
            &challenge,
            "Circle of Lies",
            "DESCRIBE",
            "rtsp://proxy/cams/x",
        );
        let verdict = g.check(&key(), request(Some(&wrong), 1010));
        assert_eq!(why(&verdict), Denied::WrongCredentials);
        // Another request URI than the one signed.
        let elsewhere = answer(
            &challenge,
            "Circle of Life",
            "DESCRIBE",
            "rtsp://proxy/other",
        );
        assert_eq!(
            why(&g.check(&key(), request(Some(&elsewhere), 1010))),
            Denied::WrongUri
        );
    }
}

#[test]
fn expired_nonce_is_stale_only_with_the_right_password() {
    let g = guard(false, true);
    let challenge = &challenges_of(&g.check(&key(), request(None, 1000)))[1];
    let later = 1000 + NONCE_LIFETIME_SECS + 1;
    let right = answer(
        challenge,
        "Circle of Life",
        "DESCRIBE",
        "rtsp://proxy/cams/x",
    );
    let verdict = g.check(&key(), request(Some(&right), later));
    assert_eq!(why(&verdict), Denied::StaleNonce);
    assert!(challenges_of(&verdict)
        .iter()
        .all(|c| c.contains("stale=true")));
    let Challenge::Digest(fresh) = &parse_challenges(&challenges_of(&verdict)[1])[0] else {
        panic!()
    };
    assert!(fresh.stale);
    assert_eq!(
        key().check(&fresh.nonce, later, REALM, "192.0.2.7"),
        NonceState::Fresh
    );
    let wrong = answer(challenge, "nope", "DESCRIBE", "rtsp://proxy/cams/x");
    let verdict = g.check(&key(), request(Some(&wrong), later));
    assert_eq!(why(&verdict), Denied::WrongCredentials);
    assert!(challenges_of(&verdict).iter().all(|c| !c.contains("stale")));
}

#[test]
fn nonces_are_bound_to_key_client_and_realm() {
    let nonce = key().issue(500, REALM, "192.0.2.7");
    assert_eq!(
        key().check(&nonce, 500, REALM, "192.0.2.7"),
        NonceState::Fresh
    );
    assert_eq!(
        key().check(&nonce, 500, REALM, "192.0.2.8"),
        NonceState::Invalid
    );
    assert_eq!(
        key().check(&nonce, 500, "other", "192.0.2.7"),
        NonceState::Invalid
    );
    let other_key = NonceKey::from_bytes([8; 32]);
    assert_eq!(
        other_key.check(&nonce, 500, REALM, "192.0.2.7"),
        NonceState::Invalid
    );
    // Issued "in the future", tampered, or not a nonce of ours at all.
    assert_eq!(
        key().check(&nonce, 499, REALM, "192.0.2.7"),
        NonceState::Invalid
    );
    let tampered = nonce.replacen("1f4", "1f5", 1);
    assert_eq!(
        key().check(&tampered, 600, REALM, "192.0.2.7"),
        NonceState::Invalid
    );
    for junk in ["", ".", "zz.zz", "1f4", "1f4.", "ffffffffffffffffff.00"] {
        assert_eq!(
            key().check(junk, 600, REALM, "192.0.2.7"),
            NonceState::Invalid,
            "{junk:?}"
        );
    }
}

#[test]
fn basic_verifies_by_hashing_the_password() {
    let g = guard(true, true);
    let challenge = challenges_of(&g.check(&key(), request(None, 1)))[2].clone();
    let header = answer(&challenge, "Circle of Life", "DESCRIBE", "ignored");
    assert_eq!(
        g.check(&key(), request(Some(&header), 1)),
        Verdict::Allowed("Mufasa".into())
    );
    let wrong = answer(&challenge, "Circle of Lif", "DESCRIBE", "ignored");
    assert_eq!(
        why(&g.check(&key(), request(Some(&wrong), 1))),
        Denied::WrongCredentials
    );
    // MD5-only users verify through their MD5 HA1.
    let md5_only = UserSecret {
        sha256: None,
        ..mufasa()
    };
    let g = ServerAuth::new(REALM, true, false, vec![md5_only]);
    assert_eq!(
        g.check(&key(), request(Some(&header), 1)),
        Verdict::Allowed("Mufasa".into())
    );
    // Digest-only resources refuse Basic even with the right password.
    let g = guard(false, true);
    assert_eq!(
        why(&g.check(&key(), request(Some(&header), 1))),
        Denied::SchemeNotAllowed
    );
}

#[test]
fn malformed_and_foreign_headers_are_refused_with_a_challenge() {
    let g = guard(false, true);
    let nonce = key().issue(1, REALM, "192.0.2.7");
    let cases = [
        (
            "Bearer abc",
            Denied::Malformed(AuthError::UnsupportedScheme("Bearer".into())),
        ),
        ("Digest", Denied::Malformed(AuthError::Missing("username"))),
        (
            "Digest username=\"Mufasa\", realm=\"x\"",
            Denied::Malformed(AuthError::Missing("nonce")),
        ),
        (
            "Basic",
            Denied::Malformed(AuthError::Missing("Basic credentials")),
        ),
        (
            "Basic bm9jb2xvbg==",
            Denied::Malformed(AuthError::Missing("Basic credentials")),
        ),
    ];
    for (header, expected) in cases {
        let verdict = g.check(&key(), request(Some(header), 1));
        assert_eq!(why(&verdict), expected, "{header}");
        assert!(!challenges_of(&verdict).is_empty());
    }
    let forged = |realm: &str, nonce: &str, user: &str| {
        format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"rtsp://proxy/cams/x\", response=\"00\"")
    };
    let verdict = g.check(&key(), request(Some(&forged("other", &nonce, "Mufasa")), 1));
    assert_eq!(why(&verdict), Denied::WrongRealm);
    let verdict = g.check(&key(), request(Some(&forged(REALM, "1.abc", "Mufasa")), 1));
    assert_eq!(why(&verdict), Denied::BadNonce);
    let verdict = g.check(&key(), request(Some(&forged(REALM, &nonce, "Scar")), 1));
    assert_eq!(why(&verdict), Denied::UnknownUser);
    let Verdict::Refused { claimed, .. } = verdict else {
        panic!()
    };
    assert_eq!(claimed.as_deref(), Some("Scar"));
    let verdict = g.check(&key(), request(Some(&forged(REALM, &nonce, "Mufasa")), 1));
    assert_eq!(why(&verdict), Denied::WrongCredentials);
}

proptest::proptest! {
    #[test]
    fn checking_anything_never_panics(header in "\\PC{0,160}", nonce in "\\PC{0,40}") {
        let g = guard(true, true);
        let _ = g.check(&key(), request(Some(&header), 1000));
        let digest = format!("Digest username=\"Mufasa\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"rtsp://proxy/cams/x\", response=\"{header}\"");
        let _ = g.check(&key(), request(Some(&digest), 1000));
        let _ = key().check(&nonce, 1000, REALM, "192.0.2.7");
    }
}

#[test]
fn secrets_never_print() {
    let printed = format!("{:?}", guard(true, true));
    assert!(!printed.contains(mufasa().md5.as_deref().unwrap()));
    assert!(!printed.contains(mufasa().sha256.as_deref().unwrap()));
}
