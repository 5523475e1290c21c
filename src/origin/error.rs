//! What can go wrong talking to an origin, and what to tell the player.
//!
//! Every variant carries the origin as a printable URL *without* userinfo
//! (see [`redacted`]); no variant ever holds a password or an
//! `Authorization` value, so `Display` and `Debug` are safe to log.

use std::io;

use url::Url;

/// An origin-side failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The TCP connection could not be made.
    #[error("cannot connect to origin {origin}: {message}")]
    Connect {
        /// The origin, without credentials.
        origin: String,
        /// What kind of I/O failure (refused, unreachable, …).
        kind: io::ErrorKind,
        /// The I/O error's text.
        message: String,
    },
    /// The TCP connection did not complete in time.
    #[error("timed out connecting to origin {origin}")]
    ConnectTimeout {
        /// The origin, without credentials.
        origin: String,
    },
    /// A request got no response in time.
    #[error("origin {origin} did not answer {method} in time")]
    ResponseTimeout {
        /// The origin, without credentials.
        origin: String,
        /// The request's method.
        method: String,
    },
    /// The origin answered a request with an error status.
    #[error("origin {origin} answered {method} with {status} {reason}")]
    Status {
        /// The origin, without credentials.
        origin: String,
        /// The request's method.
        method: String,
        /// The RTSP status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The origin wants credentials we lack, or refused ours after a retry.
    #[error("origin {origin} refused authorization for {method}")]
    Unauthorized {
        /// The origin, without credentials.
        origin: String,
        /// The request's method.
        method: String,
    },
    /// The origin sent something we cannot use (bad framing, SDP, headers).
    #[error("origin {origin} sent {what}")]
    Protocol {
        /// The origin, without credentials.
        origin: String,
        /// What was wrong.
        what: String,
    },
    /// The connection broke or was closed while we still needed it.
    #[error("connection to origin {origin} lost: {message}")]
    Io {
        /// The origin, without credentials.
        origin: String,
        /// What kind of I/O failure.
        kind: io::ErrorKind,
        /// The I/O error's text.
        message: String,
    },
    /// Setup worked but no media arrived (over UDP nor TCP), or it stopped.
    #[error("no media from origin {origin} for {seconds} s")]
    NoMedia {
        /// The origin, without credentials.
        origin: String,
        /// How long we waited.
        seconds: u64,
    },
    /// Local resources (UDP ports) could not be had.
    #[error("local resources for origin {origin}: {message}")]
    Local {
        /// The origin, without credentials.
        origin: String,
        /// What failed.
        message: String,
    },
}

impl OriginError {
    /// The RTSP status to answer the player with: the origin's own 404 /
    /// 403 / 410 / 503 / 453 passed on, 503 when the origin refused the
    /// connection, 504 for timeouts and silence, 502 for everything else.
    pub fn rtsp_status(&self) -> u16 {
        match self {
            OriginError::Status { status, .. } => match *status {
                404 | 403 | 410 | 503 => *status,
                453 => 503,
                _ => 502,
            },
            OriginError::Connect { kind, .. } if *kind == io::ErrorKind::ConnectionRefused => 503,
            OriginError::ConnectTimeout { .. }
            | OriginError::ResponseTimeout { .. }
            | OriginError::NoMedia { .. } => 504,
            OriginError::Local { .. } => 500,
            _ => 502,
        }
    }

    /// The `reason` label of the origin failures metric: one fixed word per
    /// kind of failure, so the label set stays small.
    pub fn reason_label(&self) -> &'static str {
        match self {
            OriginError::Connect { kind, .. } if *kind == io::ErrorKind::ConnectionRefused => {
                "connect_refused"
            }
            OriginError::Connect { .. } => "connect_error",
            OriginError::ConnectTimeout { .. } => "connect_timeout",
            OriginError::ResponseTimeout { .. } => "response_timeout",
            OriginError::Status { .. } => "error_status",
            OriginError::Unauthorized { .. } => "unauthorized",
            OriginError::Protocol { .. } => "protocol",
            OriginError::Io { .. } => "connection_lost",
            OriginError::NoMedia { .. } => "no_media",
            OriginError::Local { .. } => "local",
        }
    }

    pub(crate) fn io(origin: &str, e: &io::Error) -> Self {
        OriginError::Io {
            origin: origin.to_owned(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    pub(crate) fn protocol(origin: &str, what: impl Into<String>) -> Self {
        OriginError::Protocol {
            origin: origin.to_owned(),
            what: what.into(),
        }
    }
}

/// `url` as text with any username and password removed.
pub fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    // Both fail only for URLs that cannot have credentials at all.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_for_players() {
        let o = || "rtsp://o/x".to_string();
        let status = |s| OriginError::Status {
            origin: o(),
            method: "DESCRIBE".into(),
            status: s,
            reason: String::new(),
        };
        assert_eq!(status(404).rtsp_status(), 404);
        assert_eq!(status(500).rtsp_status(), 502);
        assert_eq!(status(453).rtsp_status(), 503);
        let refused = OriginError::Connect {
            origin: o(),
            kind: io::ErrorKind::ConnectionRefused,
            message: "refused".into(),
        };
        assert_eq!(refused.rtsp_status(), 503);
        let unreachable = OriginError::Connect {
            origin: o(),
            kind: io::ErrorKind::HostUnreachable,
            message: "x".into(),
        };
        assert_eq!(unreachable.rtsp_status(), 502);
        assert_eq!(
            OriginError::ConnectTimeout { origin: o() }.rtsp_status(),
            504
        );
        assert_eq!(
            OriginError::Unauthorized {
                origin: o(),
                method: "DESCRIBE".into()
            }
            .rtsp_status(),
            502
        );
    }

    #[test]
    fn reason_labels() {
        let o = || "rtsp://o/x".to_string();
        let method = || "DESCRIBE".to_string();
        let connect = |kind| OriginError::Connect {
            origin: o(),
            kind,
            message: "x".into(),
        };
        let cases = [
            (connect(io::ErrorKind::ConnectionRefused), "connect_refused"),
            (connect(io::ErrorKind::HostUnreachable), "connect_error"),
            (
                OriginError::ConnectTimeout { origin: o() },
                "connect_timeout",
            ),
            (
                OriginError::ResponseTimeout {
                    origin: o(),
                    method: method(),
                },
                "response_timeout",
            ),
            (
                OriginError::Status {
                    origin: o(),
                    method: method(),
                    status: 404,
                    reason: "Not Found".into(),
                },
                "error_status",
            ),
            (
                OriginError::Unauthorized {
                    origin: o(),
                    method: method(),
                },
                "unauthorized",
            ),
            (OriginError::protocol(&o(), "bad SDP"), "protocol"),
            (
                OriginError::io(&o(), &io::ErrorKind::UnexpectedEof.into()),
                "connection_lost",
            ),
            (
                OriginError::NoMedia {
                    origin: o(),
                    seconds: 10,
                },
                "no_media",
            ),
            (
                OriginError::Local {
                    origin: o(),
                    message: "no ports".into(),
                },
                "local",
            ),
        ];
        for (error, label) in cases {
            assert_eq!(error.reason_label(), label, "{error:?}");
        }
    }

    #[test]
    fn redacts_userinfo() {
        let url = Url::parse("rtsp://admin:s3cret@cam.example:554/live").unwrap();
        let r = redacted(&url);
        assert_eq!(r, "rtsp://cam.example:554/live");
        assert!(!r.contains("s3cret"));
    }
}
