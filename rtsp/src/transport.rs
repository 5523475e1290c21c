//! The `Transport` header (RFC 2326 §12.39), as far as streamcache uses it.
//!
//! Two transports are understood: `RTP/AVP` (or `RTP/AVP/UDP`) unicast with
//! `client_port`/`server_port` pairs, and `RTP/AVP/TCP` with
//! `interleaved=a-b`. A client may offer several alternatives separated by
//! commas; [`choose`] picks the first one the caller accepts. Parameters we
//! do not interpret are kept in [`TransportSpec::other`] and written back
//! unchanged, so a rewritten header does not lose them.

use std::fmt;

/// The lower transport of an `RTP/AVP` transport spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerTransport {
    /// RTP over UDP (`RTP/AVP` or `RTP/AVP/UDP`).
    Udp,
    /// RTP interleaved on the RTSP TCP connection (`RTP/AVP/TCP`).
    Tcp,
}

/// One transport alternative of a `Transport` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSpec {
    /// UDP or TCP interleaved.
    pub lower: LowerTransport,
    /// `true` if the spec says `multicast` (streamcache only serves unicast).
    pub multicast: bool,
    /// `client_port=rtp-rtcp`; a single port `p` means `p-(p+1)`.
    pub client_port: Option<(u16, u16)>,
    /// `server_port=rtp-rtcp`.
    pub server_port: Option<(u16, u16)>,
    /// `interleaved=rtp-rtcp`; a single channel `c` means `c-(c+1)`.
    pub interleaved: Option<(u8, u8)>,
    /// `ssrc=` (hexadecimal in RFC 2326).
    pub ssrc: Option<u32>,
    /// `mode=`, unquoted, e.g. `PLAY`.
    pub mode: Option<String>,
    /// `source=` address.
    pub source: Option<String>,
    /// `destination=` address.
    pub destination: Option<String>,
    /// Parameters not interpreted above, verbatim (e.g. `ttl=16`).
    pub other: Vec<String>,
}

/// Why a `Transport` header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The transport protocol is not RTP/AVP over UDP or TCP.
    #[error("unsupported transport protocol {0:?}")]
    UnsupportedProtocol(String),
    /// A parameter has a value that does not parse.
    #[error("bad transport parameter {0:?}")]
    BadParameter(String),
    /// No alternative in the header was acceptable (answer 461).
    #[error("no acceptable transport in {0:?}")]
    NoneAcceptable(String),
}

impl TransportSpec {
    /// A UDP unicast spec with the given client ports and nothing else.
    pub fn udp(client_port: (u16, u16)) -> Self {
        TransportSpec {
            client_port: Some(client_port),
            ..Self::empty(LowerTransport::Udp)
        }
    }

    /// A TCP interleaved spec on the given channels and nothing else.
    pub fn tcp(interleaved: (u8, u8)) -> Self {
        TransportSpec {
            interleaved: Some(interleaved),
            ..Self::empty(LowerTransport::Tcp)
        }
    }

    fn empty(lower: LowerTransport) -> Self {
        TransportSpec {
            lower,
            multicast: false,
            client_port: None,
            server_port: None,
            interleaved: None,
            ssrc: None,
            mode: None,
            source: None,
            destination: None,
            other: Vec::new(),
        }
    }

    /// Parses one alternative (no top-level commas).
    pub fn parse(spec: &str) -> Result<Self, TransportError> {
        let mut params = spec.split(';').map(str::trim);
        let protocol = params.next().unwrap_or("");
        let lower = match protocol.to_ascii_uppercase().as_str() {
            "RTP/AVP" | "RTP/AVP/UDP" => LowerTransport::Udp,
            "RTP/AVP/TCP" => LowerTransport::Tcp,
            _ => return Err(TransportError::UnsupportedProtocol(protocol.to_string())),
        };
        let mut t = Self::empty(lower);
        for param in params.filter(|p| !p.is_empty()) {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (param, None),
            };
            let bad = || TransportError::BadParameter(param.to_string());
            match (key.to_ascii_lowercase().as_str(), value) {
                ("unicast", None) => t.multicast = false,
                ("multicast", None) => t.multicast = true,
                ("client_port", Some(v)) => t.client_port = Some(parse_pair(v).ok_or_else(bad)?),
                ("server_port", Some(v)) => t.server_port = Some(parse_pair(v).ok_or_else(bad)?),
                ("interleaved", Some(v)) => t.interleaved = Some(parse_pair(v).ok_or_else(bad)?),
                ("ssrc", Some(v)) => {
                    t.ssrc = Some(u32::from_str_radix(v, 16).map_err(|_| bad())?);
                }
                ("mode", Some(v)) => t.mode = Some(v.trim_matches('"').to_string()),
                ("source", Some(v)) => t.source = Some(v.to_string()),
                ("destination", Some(v)) => t.destination = Some(v.to_string()),
                _ => t.other.push(param.to_string()),
            }
        }
        Ok(t)
    }
}

/// Parses `a-b` or `a` (meaning `a-(a+1)`).
fn parse_pair<T>(v: &str) -> Option<(T, T)>
where
    T: std::str::FromStr + Copy + TryFrom<u32>,
    u32: From<T>,
{
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: T = v.parse().ok()?;
            let b = T::try_from(u32::from(a) + 1).ok()?;
            Some((a, b))
        }
    }
}

impl fmt::Display for TransportSpec {
    /// Formats the spec as a `Transport` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lower {
            LowerTransport::Udp => f.write_str("RTP/AVP")?,
            LowerTransport::Tcp => f.write_str("RTP/AVP/TCP")?,
        }
        f.write_str(if self.multicast {
            ";multicast"
        } else {
            ";unicast"
        })?;
        if let Some(d) = &self.destination {
            write!(f, ";destination={d}")?;
        }
        if let Some(s) = &self.source {
            write!(f, ";source={s}")?;
        }
        if let Some((a, b)) = self.client_port {
            write!(f, ";client_port={a}-{b}")?;
        }
        if let Some((a, b)) = self.server_port {
            write!(f, ";server_port={a}-{b}")?;
        }
        if let Some((a, b)) = self.interleaved {
            write!(f, ";interleaved={a}-{b}")?;
        }
        if let Some(ssrc) = self.ssrc {
            write!(f, ";ssrc={ssrc:08X}")?;
        }
        for p in &self.other {
            write!(f, ";{p}")?;
        }
        if let Some(m) = &self.mode {
            write!(f, ";mode=\"{m}\"")?;
        }
        Ok(())
    }
}

/// Parses every alternative of a `Transport` header value, in order.
///
/// Alternatives with a protocol other than RTP/AVP(/UDP|/TCP) come back as
/// [`TransportError::UnsupportedProtocol`] so the caller can skip them.
pub fn parse_list(value: &str) -> Vec<Result<TransportSpec, TransportError>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(TransportSpec::parse)
        .collect()
}

/// Picks the first alternative of a client's `Transport` header that parses
/// and that `acceptable` agrees to.
pub fn choose(
    value: &str,
    acceptable: impl Fn(&TransportSpec) -> bool,
) -> Result<TransportSpec, TransportError> {
    parse_list(value)
        .into_iter()
        .flatten()
        .find(|t| acceptable(t))
        .ok_or_else(|| TransportError::NoneAcceptable(value.chars().take(200).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ffmpeg_udp_offer() {
        let t = TransportSpec::parse("RTP/AVP/UDP;unicast;client_port=21796-21797").unwrap();
        assert_eq!(t.lower, LowerTransport::Udp);
        assert!(!t.multicast);
        assert_eq!(t.client_port, Some((21796, 21797)));
        assert_eq!(t.to_string(), "RTP/AVP;unicast;client_port=21796-21797");
    }

    #[test]
    fn parses_gstreamer_reply() {
        let t = TransportSpec::parse(
            "RTP/AVP;unicast;client_port=40000-40001;server_port=50000-50001;ssrc=6A1B0C2D;mode=\"PLAY\"",
        )
        .unwrap();
        assert_eq!(t.server_port, Some((50000, 50001)));
        assert_eq!(t.ssrc, Some(0x6A1B_0C2D));
        assert_eq!(t.mode.as_deref(), Some("PLAY"));
        let tcp =
            TransportSpec::parse("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=00000001").unwrap();
        assert_eq!(tcp.lower, LowerTransport::Tcp);
        assert_eq!(tcp.interleaved, Some((2, 3)));
        assert_eq!(
            tcp.to_string(),
            "RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=00000001"
        );
    }

    #[test]
    fn single_port_means_a_pair_and_bad_values_are_named() {
        assert_eq!(
            TransportSpec::parse("RTP/AVP;client_port=5000")
                .unwrap()
                .client_port,
            Some((5000, 5001))
        );
        assert_eq!(
            TransportSpec::parse("RTP/AVP/TCP;interleaved=4")
                .unwrap()
                .interleaved,
            Some((4, 5))
        );
        assert_eq!(
            TransportSpec::parse("RTP/AVP/TCP;interleaved=255"),
            Err(TransportError::BadParameter("interleaved=255".into()))
        );
        assert_eq!(
            TransportSpec::parse("RTP/AVP;client_port=x-y"),
            Err(TransportError::BadParameter("client_port=x-y".into()))
        );
    }

    #[test]
    fn chooses_first_acceptable_alternative() {
        let offer = "RTP/SAVP;unicast;client_port=1-2, RTP/AVP;multicast, RTP/AVP/TCP;unicast;interleaved=0-1";
        let t = choose(offer, |t| !t.multicast).unwrap();
        assert_eq!(t.lower, LowerTransport::Tcp);
        let err = choose("RTP/AVP;multicast", |t| !t.multicast).unwrap_err();
        assert!(matches!(err, TransportError::NoneAcceptable(_)));
        assert_eq!(parse_list(offer).len(), 3);
    }

    #[test]
    fn keeps_unknown_parameters() {
        let t = TransportSpec::parse("RTP/AVP;unicast;client_port=10-11;x-foo=bar;ttl=3").unwrap();
        assert_eq!(t.other, vec!["x-foo=bar".to_string(), "ttl=3".to_string()]);
        assert_eq!(TransportSpec::parse(&t.to_string()).unwrap(), t);
    }

    fn spec() -> impl Strategy<Value = TransportSpec> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(any::<(u16, u16)>()),
            proptest::option::of(any::<(u16, u16)>()),
            proptest::option::of(any::<(u8, u8)>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of("[A-Z]{1,8}"),
        )
            .prop_map(|(tcp, multicast, cp, sp, il, ssrc, mode)| TransportSpec {
                lower: if tcp {
                    LowerTransport::Tcp
                } else {
                    LowerTransport::Udp
                },
                multicast,
                client_port: cp,
                server_port: sp,
                interleaved: il,
                ssrc,
                mode,
                source: None,
                destination: None,
                other: Vec::new(),
            })
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(t in spec()) {
            prop_assert_eq!(TransportSpec::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = parse_list(&s);
        }
    }
}
