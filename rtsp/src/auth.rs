//! RTSP authentication: Basic (RFC 7617) and Digest (RFC 7616, with the
//! RFC 2069 no-qop form cameras still use), MD5 and SHA-256.
//!
//! Client side: [`parse_challenges`] reads `WWW-Authenticate` (several
//! challenges may arrive joined by commas, which is how `rtsp-types` merges
//! repeated headers), [`best_challenge`] picks the strongest one, and
//! [`ClientAuth`] produces the `Authorization` header for each request,
//! counting `nc` for qop=auth.
//!
//! Server side: [`ServerAuth`] (in [`server`]) protects a resource for users
//! stored as hashed secrets (HA1), with stateless signed nonces; it answers
//! each request with [`Verdict::Allowed`] or the challenges of a 401.
//! [`basic_challenge`] / [`digest_challenge`] and [`Authorization::verify`]
//! are the plain-password building blocks (the test origin uses them).
//!
//! [`Credentials`] never prints its password, in `Debug` or otherwise.

use base64::Engine as _;
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fmt;

mod server;
pub use server::*;

/// A username and password. `Debug` shows the username only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (never printed).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A Digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `MD5` (also what an absent `algorithm=` means).
    Md5,
    /// `SHA-256`.
    Sha256,
}

impl DigestAlgorithm {
    /// The `algorithm=` token.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Digest challenge from `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    /// `realm=`.
    pub realm: String,
    /// `nonce=`.
    pub nonce: String,
    /// `opaque=`, echoed back if present.
    pub opaque: Option<String>,
    /// `algorithm=`; `None` when absent (which means MD5). Kept apart from
    /// an explicit `MD5` because some cameras refuse an `algorithm=` they
    /// did not send.
    pub algorithm: Option<DigestAlgorithm>,
    /// `true` if `qop` offers `auth`; otherwise the RFC 2069 form is used.
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired, the credentials were fine.
    pub stale: bool,
}

/// One usable challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic {
        /// The realm.
        realm: String,
    },
    /// `Digest …`.
    Digest(DigestChallenge),
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither Basic nor Digest.
    #[error("unsupported authorization scheme {0:?}")]
    UnsupportedScheme(String),
    /// A required parameter is missing or does not decode.
    #[error("authorization header lacks a valid {0}")]
    Missing(&'static str),
    /// A Digest `algorithm=` or `qop=` not implemented here (the `-sess`
    /// algorithms, `auth-int`).
    #[error("unsupported Digest {0} {1:?}")]
    Unsupported(&'static str, String),
}

/// Splits a header value into `(scheme, params)` groups. A token that is
/// not followed by `=` starts a new challenge; `token68` credentials (as in
/// Basic) are returned as a parameter with an empty name.
fn split_schemes(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let b = value.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if start == i {
            i += 1; // stray character: skip it
            continue;
        }
        let token = &value[start..i];
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && b.get(j + 1).is_some_and(|c| *c != b'=') {
            // name=value parameter
            j += 1;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let (val, next) = read_value(value, j);
            i = next;
            if let Some(last) = out.last_mut() {
                last.1.push((token.to_ascii_lowercase(), val));
            }
        } else if b.get(i) == Some(&b'=')
            || (out.last().is_some_and(|l| l.1.is_empty()) && is_token68_after_scheme(&out))
        {
            // token68 (e.g. base64 with '=' padding) following a scheme
            while i < b.len() && b[i] == b'=' {
                i += 1;
            }
            if let Some(last) = out.last_mut() {
                last.1.push((String::new(), value[start..i].to_string()));
            }
        } else {
            out.push((token.to_string(), Vec::new()));
        }
    }
    out
}

/// After `Basic` in an `Authorization` header the next bare token is the
/// credentials, not a new scheme.
fn is_token68_after_scheme(out: &[(String, Vec<(String, String)>)]) -> bool {
    out.last()
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case("basic"))
}

/// Reads a quoted-string or a token starting at `i`; returns it and the
/// index after it.
fn read_value(value: &str, mut i: usize) -> (String, usize) {
    let b = value.as_bytes();
    if b.get(i) == Some(&b'"') {
        i += 1;
        let mut s = String::new();
        let mut chars = value[i..].char_indices();
        while let Some((off, c)) = chars.next() {
            match c {
                '"' => return (s, i + off + 1),
                '\\' => {
                    if let Some((_, esc)) = chars.next() {
                        s.push(esc);
                    }
                }
                c => s.push(c),
            }
        }
        (s, b.len())
    } else {
        let start = i;
        while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        (value[start..i].to_string(), i)
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parses every Basic and Digest challenge in a `WWW-Authenticate` value,
/// in order. Other schemes and Digest algorithms other than MD5/SHA-256
/// are skipped.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    split_schemes(value)
        .into_iter()
        .filter_map(|(scheme, params)| {
            if scheme.eq_ignore_ascii_case("basic") {
                return Some(Challenge::Basic {
                    realm: param(&params, "realm").unwrap_or("").to_string(),
                });
            }
            if !scheme.eq_ignore_ascii_case("digest") {
                return None;
            }
            let algorithm = match param(&params, "algorithm") {
                None => None,
                Some(a) if a.eq_ignore_ascii_case("md5") => Some(DigestAlgorithm::Md5),
                Some(a) if a.eq_ignore_ascii_case("sha-256") => Some(DigestAlgorithm::Sha256),
                Some(_) => return None,
            };
            let qop = param(&params, "qop");
            if qop.is_some_and(|q| !q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth"))) {
                return None; // auth-int only
            }
            Some(Challenge::Digest(DigestChallenge {
                realm: param(&params, "realm")?.to_string(),
                nonce: param(&params, "nonce")?.to_string(),
                opaque: param(&params, "opaque").map(str::to_string),
                algorithm,
                qop_auth: qop.is_some(),
                stale: param(&params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            }))
        })
        .collect()
}

/// The strongest challenge: Digest SHA-256, then Digest MD5, then Basic.
pub fn best_challenge(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges.iter().max_by_key(|c| match c {
        Challenge::Digest(d) if d.algorithm == Some(DigestAlgorithm::Sha256) => 3,
        Challenge::Digest(_) => 2,
        Challenge::Basic { .. } => 1,
    })
}

/// Client-side state for answering one challenge on successive requests.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    challenge: Challenge,
    nonce_count: u32,
}

impl ClientAuth {
    /// Starts answering `challenge`.
    pub fn new(challenge: Challenge) -> Self {
        ClientAuth {
            challenge,
            nonce_count: 0,
        }
    }

    /// The challenge being answered.
    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// The `Authorization` header value for `method` on `uri`, with a fresh
    /// random client nonce.
    pub fn authorization(&mut self, creds: &Credentials, method: &str, uri: &str) -> String {
        let cnonce = hex(&rand::random::<[u8; 16]>());
        self.authorization_with_cnonce(creds, method, uri, &cnonce)
    }

    /// As [`ClientAuth::authorization`] with a given client nonce (tests use
    /// the RFC's).
    pub fn authorization_with_cnonce(
        &mut self,
        creds: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let d = match &self.challenge {
            Challenge::Basic { .. } => {
                let raw = format!("{}:{}", creds.username, creds.password);
                return format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                );
            }
            Challenge::Digest(d) => d,
        };
        let alg = d.algorithm.unwrap_or(DigestAlgorithm::Md5);
        let ha1 = alg.hash(&format!(
            "{}:{}:{}",
            creds.username, d.realm, creds.password
        ));
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\"",
            quote(&creds.username),
            quote(&d.realm),
            quote(&d.nonce),
            quote(uri)
        );
        let response = if d.qop_auth {
            self.nonce_count = self.nonce_count.wrapping_add(1);
            let nc = format!("{:08x}", self.nonce_count);
            let r = alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", d.nonce));
            header.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quote(cnonce)
            ));
            r
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", d.nonce))
        };
        header.push_str(&format!(", response=\"{response}\""));
        if let Some(a) = d.algorithm {
            header.push_str(&format!(", algorithm={}", a.name()));
        }
        if let Some(o) = &d.opaque {
            header.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        header
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A `WWW-Authenticate` value for a Basic challenge.
pub fn basic_challenge(realm: &str) -> String {
    format!("Basic realm=\"{}\"", quote(realm))
}

/// A `WWW-Authenticate` value for a Digest challenge with qop=auth.
pub fn digest_challenge(realm: &str, nonce: &str, algorithm: DigestAlgorithm) -> String {
    format!(
        "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
        quote(realm),
        quote(nonce),
        algorithm.name()
    )
}

/// A player's `Authorization` header, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Basic credentials.
    Basic(Credentials),
    /// A Digest response.
    Digest {
        /// `username=`.
        username: String,
        /// `realm=`.
        realm: String,
        /// `nonce=`.
        nonce: String,
        /// `uri=`.
        uri: String,
        /// `response=`.
        response: String,
        /// `algorithm=` (MD5 when absent).
        algorithm: DigestAlgorithm,
        /// `(nc, cnonce)` when qop=auth was used.
        qop_auth: Option<(String, String)>,
    },
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorization::Basic(c) => f.debug_tuple("Basic").field(c).finish(),
            Authorization::Digest {
                username,
                realm,
                uri,
                ..
            } => f
                .debug_struct("Digest")
                .field("username", username)
                .field("realm", realm)
                .field("uri", uri)
                .finish_non_exhaustive(),
        }
    }
}

impl Authorization {
    /// Parses an `Authorization` header value.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let groups = split_schemes(value);
        let Some((scheme, params)) = groups.into_iter().next() else {
            return Err(AuthError::UnsupportedScheme(String::new()));
        };
        if scheme.eq_ignore_ascii_case("basic") {
            let encoded = param(&params, "").ok_or(AuthError::Missing("Basic credentials"))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| AuthError::Missing("Basic credentials"))?;
            let raw =
                String::from_utf8(raw).map_err(|_| AuthError::Missing("Basic credentials"))?;
            let (username, password) = raw
                .split_once(':')
                .ok_or(AuthError::Missing("Basic credentials"))?;
            return Ok(Authorization::Basic(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(AuthError::UnsupportedScheme(
                scheme.chars().take(32).collect(),
            ));
        }
        let get = |name: &'static str| {
            param(&params, name)
                .map(str::to_string)
                .ok_or(AuthError::Missing(name))
        };
        let algorithm = match param(&params, "algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("md5") => DigestAlgorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("sha-256") => DigestAlgorithm::Sha256,
            Some(a) => return Err(unsupported("algorithm", a)),
        };
        let qop_auth = match param(&params, "qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => Some((get("nc")?, get("cnonce")?)),
            Some(q) => return Err(unsupported("qop", q)),
            None => None,
        };
        Ok(Authorization::Digest {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?,
            algorithm,
            qop_auth,
        })
    }

    /// The user name the player claims.
    pub fn username(&self) -> &str {
        match self {
            Authorization::Basic(c) => &c.username,
            Authorization::Digest { username, .. } => username,
        }
    }

    /// Checks the credentials against `password`. For Digest, `realm` and
    /// `nonce` must be the ones this server issued and `method` the
    /// request's method; they are ignored for Basic. Comparison of the
    /// secret-derived part is constant-time.
    pub fn verify(&self, method: &str, realm: &str, nonce: &str, password: &str) -> bool {
        match self {
            Authorization::Basic(c) => ct_eq(c.password.as_bytes(), password.as_bytes()),
            Authorization::Digest {
                username,
                realm: r,
                nonce: n,
                algorithm,
                ..
            } => {
                r == realm
                    && n == nonce
                    && self.digest_matches(method, &ha1(*algorithm, username, realm, password))
            }
        }
    }

    /// For Digest: whether `response=` is right for `method` given the
    /// user's `ha1` (lower-case hex, for the header's algorithm), the
    /// header's own nonce and uri. The caller checks realm, nonce and uri.
    /// False for Basic. Constant-time in the compared response.
    pub fn digest_matches(&self, method: &str, ha1: &str) -> bool {
        let Authorization::Digest {
            nonce,
            uri,
            response,
            algorithm,
            qop_auth,
            ..
        } = self
        else {
            return false;
        };
        let ha2 = algorithm.hash(&format!("{method}:{uri}"));
        let expected = match qop_auth {
            Some((nc, cnonce)) => {
                algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
        };
        ct_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        )
    }
}

/// The error for a parameter value the player chose (shortened: it is logged).
fn unsupported(what: &'static str, value: &str) -> AuthError {
    AuthError::Unsupported(what, value.chars().take(32).collect())
}

/// Compares two secrets without an early exit on the first differing byte,
/// so that response timing does not tell how much of a guess was right
/// (only whether its length was).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
