//! Server side: protecting a resource with Basic and/or Digest for a set of
//! users whose secrets are stored hashed.
//!
//! A user is stored as its HA1 per algorithm, `H(user:realm:password)`
//! (RFC 7616 §3.4.2), never as a password: Digest verifies from HA1
//! directly, and Basic verifies by computing HA1 from the password the
//! player sent.
//!
//! Nonces are stateless: `<issued secs, hex>.<HMAC-SHA-256(key, issued,
//! realm, client address), hex>`, with a per-process random key. The server
//! can tell a nonce it issued to this client for this realm from anything
//! else, and an expired one from a forged one (so that a player whose
//! credentials were right gets `stale=true` and retries without asking its
//! user). Replays of a nonce within its lifetime are not detected (that
//! would need per-nonce state); the lifetime bounds them.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::{ct_eq, hex, AuthError, Authorization, DigestAlgorithm};

/// How long an issued nonce is accepted.
pub const NONCE_LIFETIME_SECS: u64 = 300;

/// HA1 for `user` in `realm`: what the configuration stores for a user.
pub fn ha1(algorithm: DigestAlgorithm, user: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&format!("{user}:{realm}:{password}"))
}

/// A user allowed in: the name and its HA1 (lower-case hex) per algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSecret {
    /// The user name.
    pub name: String,
    /// `MD5(name:realm:password)`, if the user may use MD5.
    pub md5: Option<String>,
    /// `SHA-256(name:realm:password)`, if the user may use SHA-256.
    pub sha256: Option<String>,
}

impl UserSecret {
    fn ha1(&self, algorithm: DigestAlgorithm) -> Option<&str> {
        match algorithm {
            DigestAlgorithm::Md5 => self.md5.as_deref(),
            DigestAlgorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}

// HA1 is password-equivalent for Digest: never printed.
impl fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSecret")
            .field("name", &self.name)
            .field("md5", &self.md5.as_ref().map(|_| "<set>"))
            .field("sha256", &self.sha256.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The per-process key nonces are signed with.
pub struct NonceKey([u8; 32]);

impl NonceKey {
    /// A fresh random key.
    pub fn random() -> NonceKey {
        NonceKey(rand::random())
    }

    /// A fixed key (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> NonceKey {
        NonceKey(bytes)
    }

    fn mac(&self, issued: u64, realm: &str, client: &str) -> String {
        let realm_len = (realm.len() as u64).to_be_bytes();
        let mac = hmac_sha256(
            &self.0,
            &[
                &issued.to_be_bytes(),
                &realm_len,
                realm.as_bytes(),
                client.as_bytes(),
            ],
        );
        hex(&mac[..16])
    }

    /// A nonce for `client` (its IP address as text) in `realm`, issued at
    /// `now` (seconds since any fixed epoch the caller keeps using).
    pub fn issue(&self, now: u64, realm: &str, client: &str) -> String {
        format!("{now:x}.{}", self.mac(now, realm, client))
    }

    /// What a nonce a player sent back is worth.
    pub fn check(&self, nonce: &str, now: u64, realm: &str, client: &str) -> NonceState {
        let Some((issued, mac)) = nonce.split_once('.') else {
            return NonceState::Invalid;
        };
        let Ok(issued) = u64::from_str_radix(issued, 16) else {
            return NonceState::Invalid;
        };
        if issued > now || !ct_eq(self.mac(issued, realm, client).as_bytes(), mac.as_bytes()) {
            return NonceState::Invalid;
        }
        if now - issued > NONCE_LIFETIME_SECS {
            NonceState::Expired
        } else {
            NonceState::Fresh
        }
    }
}

/// The verdict on a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Issued by us, to this client, for this realm, and still valid.
    Fresh,
    /// Issued by us but too old: challenge again with `stale=true`.
    Expired,
    /// Not one of ours (forged, another client's, another realm's).
    Invalid,
}

/// HMAC-SHA-256 (RFC 2104) over the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Why a request was refused; for the log line, never sent to the player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header.
    NoCredentials,
    /// The header does not parse.
    Malformed(AuthError),
    /// A scheme this resource does not accept (e.g. Basic when only Digest is).
    SchemeNotAllowed,
    /// A Digest `realm=` other than ours.
    WrongRealm,
    /// A Digest `uri=` other than the request's.
    WrongUri,
    /// A nonce we did not issue to this client.
    BadNonce,
    /// Right credentials, expired nonce.
    StaleNonce,
    /// No such user, or no secret stored for the algorithm used.
    UnknownUser,
    /// Wrong password / response.
    WrongCredentials,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::NoCredentials => f.write_str("no credentials"),
            Denied::Malformed(e) => write!(f, "malformed Authorization header: {e}"),
            Denied::SchemeNotAllowed => f.write_str("authentication scheme not allowed"),
            Denied::WrongRealm => f.write_str("wrong realm"),
            Denied::WrongUri => f.write_str("digest uri is not the request's"),
            Denied::BadNonce => f.write_str("nonce not issued by this server"),
            Denied::StaleNonce => f.write_str("nonce expired"),
            Denied::UnknownUser => f.write_str("unknown user"),
            Denied::WrongCredentials => f.write_str("wrong credentials"),
        }
    }
}

/// The outcome of checking one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let in, as this user.
    Allowed(String),
    /// Answer 401 with one `WWW-Authenticate` header per challenge.
    Refused {
        /// Why, for the log.
        why: Denied,
        /// The user name the player claimed, if any (unverified).
        claimed: Option<String>,
        /// `WWW-Authenticate` values, strongest first.
        challenges: Vec<String>,
    },
}

/// Who may use a protected resource, and how they prove it.
#[derive(Debug, Clone)]
pub struct ServerAuth {
    realm: String,
    basic: bool,
    digest: bool,
    users: Vec<UserSecret>,
}

/// What a player's request brings to [`ServerAuth::check`].
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The `Authorization` header value, if any.
    pub authorization: Option<&'a str>,
    /// The request method (`DESCRIBE`…).
    pub method: &'a str,
    /// The request URI as it appears on the request line.
    pub uri: &'a str,
    /// The client's IP address as text (nonces are bound to it).
    pub client: &'a str,
    /// Seconds on the clock nonces are issued against.
    pub now: u64,
}

impl ServerAuth {
    /// A protected resource. At least one of `basic`/`digest` should be set.
    pub fn new(realm: &str, basic: bool, digest: bool, users: Vec<UserSecret>) -> ServerAuth {
        ServerAuth {
            realm: realm.to_owned(),
            basic,
            digest,
            users,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Checks a request's credentials.
    pub fn check(&self, key: &NonceKey, request: AuthRequest<'_>) -> Verdict {
        let refuse = |why: Denied, claimed: Option<&str>| Verdict::Refused {
            challenges: self.challenges(key, &request, why == Denied::StaleNonce),
            claimed: claimed.map(str::to_owned),
            why,
        };
        let Some(header) = request.authorization else {
            return refuse(Denied::NoCredentials, None);
        };
        let auth = match Authorization::parse(header) {
            Ok(auth) => auth,
            Err(e) => return refuse(Denied::Malformed(e), None),
        };
        let claimed = auth.username().to_owned();
        match self.verify(key, &request, &auth) {
            Ok(()) => Verdict::Allowed(claimed),
            Err(why) => refuse(why, Some(&claimed)),
        }
    }

    fn verify(
        &self,
        key: &NonceKey,
        request: &AuthRequest<'_>,
        auth: &Authorization,
    ) -> Result<(), Denied> {
        let user = self.users.iter().find(|u| u.name == auth.username());
        match auth {
            Authorization::Basic(creds) => {
                if !self.basic {
                    return Err(Denied::SchemeNotAllowed);
                }
                let user = user.ok_or(Denied::UnknownUser)?;
                let (algorithm, stored) = [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
                    .into_iter()
                    .find_map(|a| Some((a, user.ha1(a)?)))
                    .ok_or(Denied::UnknownUser)?;
                let computed = ha1(algorithm, &creds.username, &self.realm, &creds.password);
                if ct_eq(computed.as_bytes(), stored.to_ascii_lowercase().as_bytes()) {
                    Ok(())
                } else {
                    Err(Denied::WrongCredentials)
                }
            }
            Authorization::Digest {
                realm,
                nonce,
                uri,
                algorithm,
                ..
            } => {
                if !self.digest {
                    return Err(Denied::SchemeNotAllowed);
                }
                if *realm != self.realm {
                    return Err(Denied::WrongRealm);
                }
                if uri != request.uri {
                    return Err(Denied::WrongUri);
                }
                let nonce_state = key.check(nonce, request.now, &self.realm, request.client);
                if nonce_state == NonceState::Invalid {
                    return Err(Denied::BadNonce);
                }
                let stored = user
                    .and_then(|u| u.ha1(*algorithm))
                    .ok_or(Denied::UnknownUser)?;
                if !auth.digest_matches(request.method, &stored.to_ascii_lowercase()) {
                    return Err(Denied::WrongCredentials);
                }
                if nonce_state == NonceState::Expired {
                    return Err(Denied::StaleNonce);
                }
                Ok(())
            }
        }
    }

    /// The `WWW-Authenticate` values for a 401, strongest first: Digest
    /// SHA-256 and MD5 (for the algorithms some user has a secret for),
    /// then Basic. Players that read only one Digest challenge tend to keep
    /// the last (ffmpeg), which is MD5, the one they all support.
    fn challenges(&self, key: &NonceKey, request: &AuthRequest<'_>, stale: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.digest {
            let nonce = key.issue(request.now, &self.realm, request.client);
            for algorithm in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
                if self.users.iter().any(|u| u.ha1(algorithm).is_some()) {
                    let mut challenge = super::digest_challenge(&self.realm, &nonce, algorithm);
                    if stale {
                        challenge.push_str(", stale=true");
                    }
                    out.push(challenge);
                }
            }
        }
        if self.basic {
            out.push(super::basic_challenge(&self.realm));
        }
        out
    }
}

#[cfg(test)]
mod tests {
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
        assert!(
            challenges[0].contains("algorithm=SHA-256") && challenges[0].contains("qop=\"auth\"")
        );
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
}
