//! A title's tracks from its SDP, as the daemon's origin client reads them
//! (one track per `m=` section, its first payload type).

use streamcache_rtsp::sdp::{Sdp, SdpError};

use crate::frame::TrackSpec;

/// Why an SDP gives no track list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TracksError {
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("media section {0} has no RTP payload type")]
    NoPayloadType(usize),
}

impl TrackSpec {
    /// Every `m=` section of `sdp`, in order (track `i` is section `i`).
    /// A payload type without an rtpmap takes its static name and rate
    /// (RFC 3551); a dynamic one without a rate gets 8 kHz for audio and
    /// 90 kHz otherwise, as the origin client guesses.
    pub fn from_sdp(sdp: &str) -> Result<Vec<TrackSpec>, TracksError> {
        let sdp = Sdp::parse(sdp)?;
        sdp.media
            .iter()
            .enumerate()
            .map(|(index, m)| {
                let payload_type = *m
                    .payload_types()
                    .first()
                    .ok_or(TracksError::NoPayloadType(index))?;
                let map = m.rtpmap(payload_type);
                let guess = if m.kind == "audio" { 8000 } else { 90000 };
                Ok(TrackSpec {
                    media: m.kind.clone(),
                    encoding: map.map_or_else(
                        || streamcache_rtsp::sdp::static_encoding(payload_type).to_owned(),
                        |map| map.encoding.clone(),
                    ),
                    payload_type,
                    clock_rate: m.clock_rate(payload_type).unwrap_or(guess),
                    channels: map.and_then(|map| map.channels),
                    fmtp: m.fmtp(payload_type).map(str::to_owned),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_of_an_sdp() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n\
                   m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                   a=fmtp:96 packetization-mode=1\r\n\
                   m=audio 0 RTP/AVP 0\r\n\
                   m=audio 0 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\n";
        let tracks = TrackSpec::from_sdp(sdp).expect("parses");
        let summary: Vec<_> = tracks
            .iter()
            .map(|t| {
                (
                    t.encoding.as_str(),
                    t.payload_type,
                    t.clock_rate,
                    t.channels,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("H264", 96, 90000, None),
                ("PCMU", 0, 8000, None),
                ("opus", 97, 48000, Some(2))
            ]
        );
        assert_eq!(tracks[0].fmtp.as_deref(), Some("packetization-mode=1"));
        assert_eq!(tracks[1].media, "audio");
        let bad = "v=0\r\ns=x\r\nm=application 0 TCP/X *\r\n";
        assert!(matches!(
            TrackSpec::from_sdp(bad),
            Err(TracksError::NoPayloadType(0))
        ));
    }
}
