//! Whether a video packet lets a decoder start: a random-access point.
//!
//! For H.264 (RFC 6184) that is a packet starting an IDR slice (NAL type 5)
//! or carrying a parameter set (SPS 7, PPS 8) — as a single NAL unit, inside
//! a STAP-A (24), or as the start fragment of an FU-A (28). For H.265 the
//! same with IRAP pictures (16–21) and VPS/SPS/PPS (32–34). The NAL parsing
//! is the project's own (`streamcache_rtsp::rtp`), which the proxy uses to
//! pick where a joining player starts.

use streamcache_rtsp::rtp::{has_parameter_sets, is_random_access, Codec};

/// `true` if this RTP payload of a `codec` track is a random-access point.
/// Only meaningful for H.264 and H.265; `false` for any other codec.
pub fn is_rap(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::H264 | Codec::H265 => {
            is_random_access(codec, payload) || has_parameter_sets(codec, payload)
        }
        Codec::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(payload: &[u8]) -> bool {
        is_rap(Codec::H264, payload)
    }

    #[test]
    fn single_nal_units() {
        assert!(h264(&[0x65, 0x88])); // IDR slice
        assert!(h264(&[0x67, 0x42])); // SPS
        assert!(h264(&[0x68, 0xce])); // PPS
        assert!(!h264(&[0x41, 0x9a])); // non-IDR slice
        assert!(!h264(&[0x06, 0x05])); // SEI
        assert!(!h264(&[]));
    }

    #[test]
    fn stap_a_with_parameter_sets() {
        // STAP-A: [size SPS][size PPS].
        let stap = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        assert!(h264(&stap));
        let only_sei = [0x78, 0, 2, 0x06, 0x05];
        assert!(!h264(&only_sei));
    }

    #[test]
    fn fu_a_start_fragment_only() {
        // FU indicator type 28 (NRI 3), FU header start bit + type 5.
        assert!(h264(&[0x7c, 0x85, 0xaa]));
        // Middle and end fragments of the same IDR start nothing.
        assert!(!h264(&[0x7c, 0x05, 0xaa]));
        assert!(!h264(&[0x7c, 0x45, 0xaa]));
        // Start fragment of a non-IDR slice.
        assert!(!h264(&[0x7c, 0x81, 0xaa]));
    }

    #[test]
    fn other_codecs_never_count() {
        assert!(!is_rap(Codec::Other, &[0x65]));
    }
}
