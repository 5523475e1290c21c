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
mod tests;
