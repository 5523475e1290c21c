//! Sans-io RTSP/RTP protocol pieces shared by streamcache's player-facing
//! server and its origin client.
//!
//! Nothing in this crate touches a socket or a runtime: every function takes
//! bytes or strings and gives back parsed values or bytes to send, so each
//! piece can be unit-tested, property-tested and fuzzed on its own.
//!
//! - [`framing`]: split a byte stream into RTSP requests, responses and
//!   `$`-interleaved binary frames, with size bounds.
//! - `codec` (feature `codec`): the same framing as a tokio-util
//!   `Decoder`/`Encoder`, for the places that read RTSP off a socket. It is
//!   the only part that pulls in tokio (through tokio-util).
//! - [`transport`]: the `Transport` header (UDP unicast and TCP interleaved).
//! - [`range`]: `Range: npt=`, `RTP-Info` and `Session` headers.
//! - [`sdp`]: SDP parsing, control-URL resolution and rewriting.
//! - [`auth`]: Basic and Digest authentication, client and server side.
//! - [`rtp`]: RTP header view and rewrite, H.264/H.265 random-access
//!   detection, RTCP sender/receiver reports and BYE.
//! - [`loss`]: packet loss from the cumulative totals of players' RTCP
//!   reception reports.

pub mod auth;
#[cfg(feature = "codec")]
pub mod codec;
pub mod framing;
pub mod loss;
pub mod range;
pub mod rtp;
pub mod sdp;
pub mod transport;

pub use rtsp_types;
