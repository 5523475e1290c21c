//! SDP (RFC 4566) as RTSP uses it: read the media sections, find each
//! track's control URL, and write the description back with only the
//! control URLs changed.
//!
//! The parsed [`Sdp`] keeps every original line, so [`Sdp::rewrite_controls`]
//! reproduces the origin's text byte for byte except for the `a=control:`
//! lines it replaces (or adds, for a section that had none). Lines this module
//! does not interpret are simply carried along.
//!
//! Control URL resolution follows RFC 2326 appendix C.1.1: the base is
//! `Content-Base`, else `Content-Location`, else the request URL (see
//! [`base_url`]); `*` means the base itself; an absolute URL is used as is;
//! anything else is relative to the base. Like ffmpeg, GStreamer and live555,
//! a base without a trailing slash is treated as a directory
//! (`rtsp://h/cam` + `trackID=1` = `rtsp://h/cam/trackID=1`), because that is
//! what servers that omit `Content-Base` mean.

use crate::range::PlayRange;
use rtsp_types::Url;

/// Why an SDP could not be parsed or a control URL not resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The text is not an SDP; `line` is 1-based.
    #[error("SDP line {line}: {what}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        what: String,
    },
    /// A control attribute does not form a URL against the base.
    #[error("control URL {control:?} does not resolve against {base}")]
    BadControl {
        /// The `a=control:` value.
        control: String,
        /// The base URL it was resolved against.
        base: String,
    },
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as written, e.g. `H264`, `MPEG4-GENERIC`.
    pub encoding: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count (audio), if given.
    pub channels: Option<u16>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// Media kind: `video`, `audio`, `application`, …
    pub kind: String,
    /// The port of the `m=` line (usually 0 in RTSP).
    pub port: u16,
    /// Transport protocol of the `m=` line, e.g. `RTP/AVP`.
    pub protocol: String,
    /// Formats of the `m=` line (payload types for RTP), as written.
    pub formats: Vec<String>,
    /// `a=control:` value, if any.
    pub control: Option<String>,
    /// `a=rtpmap:` attributes.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:` attributes as (payload type, parameters).
    pub fmtps: Vec<(u8, String)>,
    /// `a=range:` of this section, if any and in npt.
    pub range: Option<PlayRange>,
    /// Index of the `m=` line in `Sdp::lines`.
    first_line: usize,
    /// One past the last line of the section.
    end_line: usize,
    /// Index of the `a=control:` line, if any.
    control_line: Option<usize>,
}

impl Media {
    /// The payload types of the `m=` line that are numbers.
    pub fn payload_types(&self) -> Vec<u8> {
        self.formats.iter().filter_map(|f| f.parse().ok()).collect()
    }

    /// The `a=rtpmap` for a payload type.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == payload_type)
    }

    /// The `a=fmtp` parameters for a payload type.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, p)| p.as_str())
    }

    /// The clock rate for a payload type: from `a=rtpmap`, else from the
    /// static payload types of RFC 3551 (0, 3, 4, 5, 8 … at 8 kHz; 14, 26,
    /// 31, 32, 33, 34 at 90 kHz).
    pub fn clock_rate(&self, payload_type: u8) -> Option<u32> {
        if let Some(m) = self.rtpmap(payload_type) {
            return Some(m.clock_rate);
        }
        match payload_type {
            0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => Some(8000),
            6 => Some(16000),
            10 | 11 => Some(44100),
            14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => Some(90000),
            _ => None,
        }
    }
}

/// Encoding names of the common static payload types (RFC 3551): what an
/// `m=` line without an `a=rtpmap` for its payload type means; "" for the
/// others.
pub fn static_encoding(pt: u8) -> &'static str {
    match pt {
        0 => "PCMU",
        8 => "PCMA",
        14 => "MPA",
        26 => "JPEG",
        32 => "MPV",
        33 => "MP2T",
        _ => "",
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq)]
pub struct Sdp {
    /// Every line with its original line ending.
    lines: Vec<String>,
    /// Session-level `a=control:` value.
    pub session_control: Option<String>,
    /// Session-level `a=range:` in npt.
    pub session_range: Option<PlayRange>,
    /// Media sections in order.
    pub media: Vec<Media>,
    /// Index of the session-level `a=control:` line.
    session_control_line: Option<usize>,
    /// The line ending to use for added lines (`\r\n` unless the text uses `\n`).
    eol: &'static str,
}

impl Sdp {
    /// Parses SDP text. Lines must be `<letter>=<value>`; the first must be
    /// `v=`. Unknown lines and attributes are kept and ignored.
    pub fn parse(text: &str) -> Result<Sdp, SdpError> {
        let lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        let eol = if lines
            .first()
            .is_some_and(|l| !l.ends_with("\r\n") && l.ends_with('\n'))
        {
            "\n"
        } else {
            "\r\n"
        };
        let mut sdp = Sdp {
            lines: Vec::new(),
            session_control: None,
            session_range: None,
            media: Vec::new(),
            session_control_line: None,
            eol,
        };
        let mut seen_version = false;
        for (i, raw) in lines.iter().enumerate() {
            let err = |what: &str| SdpError::Malformed {
                line: i + 1,
                what: what.to_string(),
            };
            let line = raw.trim_end_matches(['\r', '\n']);
            if line.trim().is_empty() {
                continue;
            }
            let Some((kind, value)) = line.split_once('=') else {
                return Err(err("not <type>=<value>"));
            };
            let kind = kind.trim();
            if kind.len() != 1 || !kind.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(err("type is not a single letter"));
            }
            if !seen_version {
                if kind != "v" {
                    return Err(err("first line is not v="));
                }
                seen_version = true;
            }
            match kind {
                "m" => {
                    if let Some(last) = sdp.media.last_mut() {
                        last.end_line = i;
                    }
                    sdp.media
                        .push(parse_media_line(value, i).ok_or_else(|| err("bad m= line"))?);
                }
                "a" => sdp.apply_attribute(value, i).map_err(|what| err(&what))?,
                _ => {}
            }
        }
        if !seen_version {
            return Err(SdpError::Malformed {
                line: 1,
                what: "empty description".into(),
            });
        }
        if let Some(last) = sdp.media.last_mut() {
            last.end_line = lines.len();
        }
        sdp.lines = lines;
        Ok(sdp)
    }

    fn apply_attribute(&mut self, value: &str, index: usize) -> Result<(), String> {
        let (name, arg) = value.split_once(':').unwrap_or((value, ""));
        let arg = arg.trim();
        match (name.trim(), self.media.last_mut()) {
            ("control", None) => {
                self.session_control = Some(arg.to_string());
                self.session_control_line = Some(index);
            }
            ("control", Some(m)) => {
                m.control = Some(arg.to_string());
                m.control_line = Some(index);
            }
            // A range in another unit (clock=, smpte=) is not an error, just not usable.
            ("range", None) => self.session_range = PlayRange::parse(arg).ok(),
            ("range", Some(m)) => m.range = PlayRange::parse(arg).ok(),
            ("rtpmap", Some(m)) => m
                .rtpmaps
                .push(parse_rtpmap(arg).ok_or_else(|| format!("bad rtpmap {arg:?}"))?),
            ("fmtp", Some(m)) => {
                let (pt, params) = arg.split_once(' ').unwrap_or((arg, ""));
                let pt = pt.parse().map_err(|_| format!("bad fmtp {arg:?}"))?;
                m.fmtps.push((pt, params.trim().to_string()));
            }
            _ => {}
        }
        Ok(())
    }

    /// The presentation's npt range: session level, else the first media
    /// section that has one.
    pub fn range(&self) -> Option<PlayRange> {
        self.session_range
            .or_else(|| self.media.iter().find_map(|m| m.range))
    }

    /// The original text, unchanged.
    pub fn text(&self) -> String {
        self.lines.concat()
    }

    /// The aggregate control URL (session-level `a=control`, else the base).
    pub fn aggregate_url(&self, base: &Url) -> Result<Url, SdpError> {
        resolve_control(base, self.session_control.as_deref())
    }

    /// The control URL of every media section, in order.
    pub fn track_urls(&self, base: &Url) -> Result<Vec<Url>, SdpError> {
        self.media
            .iter()
            .map(|m| resolve_control(base, m.control.as_deref()))
            .collect()
    }

    /// The description with control URLs replaced: `aggregate` for the
    /// session level (if given) and `tracks[i]` for media section `i` (for
    /// as many sections as `tracks` covers). A section without an
    /// `a=control:` line gets one appended. Every other byte is preserved.
    pub fn rewrite_controls(&self, aggregate: Option<&str>, tracks: &[String]) -> String {
        let mut out =
            String::with_capacity(self.lines.iter().map(String::len).sum::<usize>() + 256);
        let first_media = self
            .media
            .first()
            .map_or(self.lines.len(), |m| m.first_line);
        let line_end = |line: &str| -> &str {
            if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            }
        };
        let replacement = |index: usize| -> Option<&str> {
            if Some(index) == self.session_control_line {
                return aggregate;
            }
            self.media
                .iter()
                .zip(tracks)
                .find(|(m, _)| m.control_line == Some(index))
                .map(|(_, t)| t.as_str())
        };
        // Where to append a control line for sections lacking one: after the
        // last non-empty line of the section.
        let mut appends: Vec<(usize, &str)> = Vec::new();
        if let (Some(a), None) = (aggregate, self.session_control_line) {
            appends.push((self.last_content_line(0, first_media), a));
        }
        for (m, t) in self.media.iter().zip(tracks) {
            if m.control_line.is_none() {
                appends.push((self.last_content_line(m.first_line, m.end_line), t));
            }
        }
        for (i, line) in self.lines.iter().enumerate() {
            match replacement(i) {
                Some(url) => {
                    out.push_str("a=control:");
                    out.push_str(url);
                    out.push_str(line_end(line));
                }
                None => out.push_str(line),
            }
            for (_, url) in appends.iter().filter(|(at, _)| *at == i) {
                if !out.ends_with('\n') {
                    out.push_str(self.eol);
                }
                out.push_str("a=control:");
                out.push_str(url);
                out.push_str(self.eol);
            }
        }
        out
    }

    fn last_content_line(&self, start: usize, end: usize) -> usize {
        (start..end)
            .rev()
            .find(|&i| !self.lines[i].trim().is_empty())
            .unwrap_or(start)
    }
}

fn parse_media_line(value: &str, index: usize) -> Option<Media> {
    let mut parts = value.split_ascii_whitespace();
    let kind = parts.next()?.to_string();
    // "port/count" is allowed by RFC 4566.
    let port = parts.next()?.split('/').next()?.parse().ok()?;
    let protocol = parts.next()?.to_string();
    Some(Media {
        kind,
        port,
        protocol,
        formats: parts.map(str::to_string).collect(),
        control: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        range: None,
        first_line: index,
        end_line: index + 1,
        control_line: None,
    })
}

fn parse_rtpmap(arg: &str) -> Option<RtpMap> {
    let (pt, rest) = arg.split_once(' ')?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.trim().to_string();
    let clock_rate = parts.next()?.trim().parse().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.trim().parse().ok()?),
        None => None,
    };
    Some(RtpMap {
        payload_type: pt.trim().parse().ok()?,
        encoding,
        clock_rate,
        channels,
    })
}

/// The base URL for control resolution (RFC 2326 C.1.1): `Content-Base`,
/// else `Content-Location`, each resolved against the request URL, else the
/// request URL. Values that do not form a URL are skipped.
pub fn base_url(
    request_url: &Url,
    content_base: Option<&str>,
    content_location: Option<&str>,
) -> Url {
    [content_base, content_location]
        .into_iter()
        .flatten()
        .find_map(|v| request_url.join(v.trim()).ok())
        .unwrap_or_else(|| request_url.clone())
}

/// Resolves one `a=control:` value (or its absence) against a base URL.
pub fn resolve_control(base: &Url, control: Option<&str>) -> Result<Url, SdpError> {
    let control = match control.map(str::trim) {
        None | Some("") | Some("*") => return Ok(base.clone()),
        Some(c) => c,
    };
    if let Ok(abs) = Url::parse(control) {
        return Ok(abs);
    }
    let mut dir = base.clone();
    if !dir.path().ends_with('/') {
        let path = format!("{}/", dir.path());
        dir.set_path(&path);
    }
    dir.join(control).map_err(|_| SdpError::BadControl {
        control: control.to_string(),
        base: base.to_string(),
    })
}

#[cfg(test)]
mod tests;
