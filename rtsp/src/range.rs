//! Play-position headers: `Range` (npt only), `RTP-Info` and `Session`.
//!
//! Normal play time (RFC 2326 §3.6) is read in both its forms, seconds
//! (`10.5`) and `h:mm:ss.frac`, plus `now`. Other range units (SMPTE, clock)
//! are refused with [`HeaderError::UnsupportedUnit`]; streamcache caches by
//! npt and answers 457 to anything else.

use std::fmt;

pub use streamcache_types::{Npt, NptRange};

/// Why a play-position header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A range in a unit other than `npt`.
    #[error("unsupported range unit in {0:?}")]
    UnsupportedUnit(String),
    /// The header does not follow its grammar; the text names the part.
    #[error("malformed {what}: {value:?}")]
    Malformed {
        /// Which header or part of it.
        what: &'static str,
        /// The offending text (shortened).
        value: String,
    },
}

fn malformed(what: &'static str, value: &str) -> HeaderError {
    HeaderError::Malformed {
        what,
        value: value.chars().take(100).collect(),
    }
}

/// A start position in normal play time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NptStart {
    /// `now`: the live point.
    Now,
    /// A position from the beginning of the presentation.
    At(Npt),
}

/// An npt range as a `Range` header or an SDP `a=range:` writes it:
/// `npt=start-[end]`, where start may be `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayRange {
    /// Where play starts.
    pub start: NptStart,
    /// Where play ends, `None` for open-ended.
    pub end: Option<Npt>,
}

impl PlayRange {
    /// Parses a `Range` header value or an SDP `a=range:` value, e.g.
    /// `npt=10.5-`, `npt=0-20.3`, `npt=now-`, `npt=0:01:02.5-`.
    ///
    /// A `;time=` suffix (RFC 2326 §12.29) is ignored. `npt=-20` (end only)
    /// is read as `0-20`.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let value = value.trim();
        let spec = value.split(';').next().unwrap_or("").trim();
        let Some((unit, range)) = spec.split_once('=') else {
            return Err(malformed("Range", value));
        };
        if !unit.trim().eq_ignore_ascii_case("npt") {
            return Err(HeaderError::UnsupportedUnit(
                value.chars().take(100).collect(),
            ));
        }
        let Some((start, end)) = range.trim().split_once('-') else {
            return Err(malformed("Range", value));
        };
        let start = match start.trim() {
            "" => NptStart::At(Npt::ZERO),
            s if s.eq_ignore_ascii_case("now") => NptStart::Now,
            s => NptStart::At(Npt::parse(s).ok_or_else(|| malformed("npt start", s))?),
        };
        let end = match end.trim() {
            "" => None,
            e => Some(Npt::parse(e).ok_or_else(|| malformed("npt end", e))?),
        };
        if let (NptStart::At(s), Some(e)) = (start, end) {
            if e < s {
                return Err(malformed("Range", value));
            }
        }
        Ok(PlayRange { start, end })
    }

    /// The range as a title's: `None` when it starts at `now` (live).
    pub fn title_range(&self) -> Option<NptRange> {
        match self.start {
            NptStart::Now => None,
            NptStart::At(start) => Some(NptRange {
                start,
                end: self.end,
            }),
        }
    }
}

impl fmt::Display for PlayRange {
    /// Formats as a `Range` header value with millisecond precision,
    /// e.g. `npt=10.500-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.start {
            NptStart::Now => f.write_str("npt=now-")?,
            NptStart::At(s) => write!(f, "npt={s}-")?,
        }
        if let Some(e) = self.end {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// One entry of an `RTP-Info` header: where a track's stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpInfo {
    /// The track's control URL.
    pub url: String,
    /// Sequence number of the first packet sent after PLAY.
    pub seq: Option<u16>,
    /// RTP timestamp corresponding to the start of the Range.
    pub rtptime: Option<u32>,
}

impl fmt::Display for RtpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "url={}", self.url)?;
        if let Some(seq) = self.seq {
            write!(f, ";seq={seq}")?;
        }
        if let Some(t) = self.rtptime {
            write!(f, ";rtptime={t}")?;
        }
        Ok(())
    }
}

/// Formats an `RTP-Info` header value from its entries.
pub fn format_rtp_info(entries: &[RtpInfo]) -> String {
    entries
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses an `RTP-Info` header value.
///
/// Entries are split at commas that start a new `url=`, so a comma inside a
/// URL does not break the entry. Unknown parameters (`ssrc=` of RTSP 2.0)
/// are ignored.
pub fn parse_rtp_info(value: &str) -> Result<Vec<RtpInfo>, HeaderError> {
    let mut entries: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts_entry = piece.trim_start().to_ascii_lowercase().starts_with("url=");
        match entries.last_mut() {
            Some(last) if !starts_entry => {
                last.push(',');
                last.push_str(piece);
            }
            _ if starts_entry => entries.push(piece.trim().to_string()),
            _ => return Err(malformed("RTP-Info", value)),
        }
    }
    entries
        .iter()
        .map(|entry| {
            let mut params = entry.split(';');
            let url = params.next().unwrap_or("").trim();
            let url = url.get(4..).unwrap_or("").trim();
            if url.is_empty() {
                return Err(malformed("RTP-Info url", entry));
            }
            let mut info = RtpInfo {
                url: url.to_string(),
                seq: None,
                rtptime: None,
            };
            for p in params {
                match p.trim().split_once('=') {
                    Some(("seq", v)) => {
                        info.seq = Some(v.trim().parse().map_err(|_| malformed("RTP-Info seq", p))?)
                    }
                    Some(("rtptime", v)) => {
                        info.rtptime = Some(
                            v.trim()
                                .parse()
                                .map_err(|_| malformed("RTP-Info rtptime", p))?,
                        )
                    }
                    _ => {}
                }
            }
            Ok(info)
        })
        .collect()
}

/// A `Session` header: the session id and the optional timeout in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHeader {
    /// The session identifier.
    pub id: String,
    /// `;timeout=` in seconds; RFC 2326 says 60 when absent.
    pub timeout: Option<u32>,
}

impl SessionHeader {
    /// The timeout RFC 2326 §12.37 implies when none is given, in seconds.
    pub const DEFAULT_TIMEOUT: u32 = 60;

    /// Parses `id[;timeout=N]`. An unparseable timeout is ignored rather
    /// than failing the whole header (some cameras send `timeout=60s`).
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut parts = value.split(';');
        let id = parts.next().unwrap_or("").trim();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("Session", value));
        }
        let timeout = parts
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("timeout"))
            .and_then(|(_, v)| v.trim().parse().ok());
        Ok(SessionHeader {
            id: id.to_string(),
            timeout,
        })
    }

    /// The timeout to assume, given or default.
    pub fn timeout_or_default(&self) -> u32 {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }
}

impl fmt::Display for SessionHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)?;
        if let Some(t) = self.timeout {
            write!(f, ";timeout={t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_npt_forms() {
        let r = PlayRange::parse("npt=10.5-").unwrap();
        assert_eq!(
            r,
            PlayRange {
                start: NptStart::At(Npt::from_millis(10_500)),
                end: None
            }
        );
        assert_eq!(
            PlayRange::parse("npt=0-20.3").unwrap().end,
            Some(Npt::from_millis(20_300))
        );
        assert_eq!(PlayRange::parse("npt=now-").unwrap().start, NptStart::Now);
        assert_eq!(
            PlayRange::parse("npt = 0:01:02.5-").unwrap().start,
            NptStart::At(Npt::from_millis(62_500))
        );
        assert_eq!(
            PlayRange::parse("npt=9.021-20.000;time=19970123T153600Z").unwrap(),
            PlayRange {
                start: NptStart::At(Npt::from_millis(9_021)),
                end: Some(Npt::from_secs(20))
            }
        );
        assert_eq!(
            PlayRange::parse("npt=-20").unwrap().start,
            NptStart::At(Npt::ZERO)
        );
    }

    #[test]
    fn refuses_bad_ranges() {
        assert!(matches!(
            PlayRange::parse("smpte=10:07:00-10:07:33:05.01"),
            Err(HeaderError::UnsupportedUnit(_))
        ));
        for bad in [
            "npt=",
            "npt=abc-",
            "npt=inf-",
            "npt=1e3-",
            "npt=20-10",
            "npt=1:60:00-",
            "10-20",
        ] {
            assert!(
                matches!(PlayRange::parse(bad), Err(HeaderError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn formats_npt() {
        assert_eq!(
            PlayRange {
                start: NptStart::At(Npt::from_millis(10_500)),
                end: None
            }
            .to_string(),
            "npt=10.500-"
        );
        assert_eq!(
            PlayRange {
                start: NptStart::Now,
                end: None
            }
            .to_string(),
            "npt=now-"
        );
        assert_eq!(
            PlayRange {
                start: NptStart::At(Npt::ZERO),
                end: Some(Npt::from_millis(20_300))
            }
            .to_string(),
            "npt=0.000-20.300"
        );
    }

    #[test]
    fn rtp_info_round_trip_and_gstreamer_sample() {
        let v = "url=rtsp://127.0.0.1:8554/test/stream=0;seq=25371;rtptime=1912426046, url=rtsp://127.0.0.1:8554/test/stream=1;seq=3907;rtptime=3519165633";
        let infos = parse_rtp_info(v).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].url, "rtsp://127.0.0.1:8554/test/stream=0");
        assert_eq!(infos[0].seq, Some(25371));
        assert_eq!(infos[1].rtptime, Some(3_519_165_633));
        assert_eq!(parse_rtp_info(&format_rtp_info(&infos)).unwrap(), infos);
        let comma = parse_rtp_info("url=rtsp://h/a,b;seq=1").unwrap();
        assert_eq!(comma[0].url, "rtsp://h/a,b");
        assert!(parse_rtp_info("seq=1").is_err());
        assert!(parse_rtp_info("url=rtsp://h/a;seq=x").is_err());
    }

    #[test]
    fn session_header() {
        let s = SessionHeader::parse("BDXkM9DVcaW2RfHd;timeout=60").unwrap();
        assert_eq!(s.id, "BDXkM9DVcaW2RfHd");
        assert_eq!(s.timeout, Some(60));
        assert_eq!(s.to_string(), "BDXkM9DVcaW2RfHd;timeout=60");
        let bare = SessionHeader::parse(" 12345678 ").unwrap();
        assert_eq!(bare.timeout_or_default(), 60);
        assert_eq!(
            SessionHeader::parse("abc;timeout=60s").unwrap().timeout,
            None
        );
        assert!(SessionHeader::parse(";timeout=5").is_err());
    }

    proptest! {
        #[test]
        fn npt_round_trip(start_ms in 0u64..100_000_000, len_ms in proptest::option::of(0u64..100_000_000)) {
            let r = PlayRange {
                start: NptStart::At(Npt::from_millis(start_ms)),
                end: len_ms.map(|l| Npt::from_millis(start_ms + l)),
            };
            prop_assert_eq!(PlayRange::parse(&r.to_string()).unwrap(), r);
        }

        #[test]
        fn rtp_info_round_trip(urls in proptest::collection::vec("rtsp://[a-z]{1,8}/[a-z0-9=]{1,8}", 1..4), seq in any::<u16>(), ts in any::<u32>()) {
            let infos: Vec<RtpInfo> = urls.into_iter().map(|url| RtpInfo { url, seq: Some(seq), rtptime: Some(ts) }).collect();
            prop_assert_eq!(parse_rtp_info(&format_rtp_info(&infos)).unwrap(), infos);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,60}") {
            let _ = PlayRange::parse(&s);
            let _ = parse_rtp_info(&s);
            let _ = SessionHeader::parse(&s);
        }
    }
}
