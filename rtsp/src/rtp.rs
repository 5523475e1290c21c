//! RTP and RTCP as the proxy needs them.
//!
//! - [`RtpHeader`] / [`RtpView`]: a checked view of an RTP packet's fixed
//!   header (via `rtp-rs`) and [`rewrite`] to renumber a packet in place for
//!   one player.
//! - [`Codec`], [`is_random_access`], [`has_parameter_sets`]: spot where a
//!   player may join an H.264 (RFC 6184) or H.265 (RFC 7798) stream, looking
//!   inside aggregation packets and at the first fragment of a fragmented
//!   NAL unit.
//! - RTCP (RFC 3550 §6): build sender reports, receiver reports and BYE;
//!   read sender reports, report blocks and BYE from a compound packet.

use std::time::{SystemTime, UNIX_EPOCH};

/// Why bytes are not a usable RTP or RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The RTP packet is malformed; the text says how.
    #[error("bad RTP packet: {0}")]
    BadRtp(String),
    /// The RTCP packet is malformed; the text says how.
    #[error("bad RTCP packet: {0}")]
    BadRtcp(&'static str),
}

/// The fixed header of an RTP packet (always version 2) and where its
/// payload lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit (end of an access unit for video).
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRC entries.
    pub csrc_count: u8,
    /// `true` if a header extension is present.
    pub extension: bool,
    /// Number of padding bytes at the end (0 if none).
    pub padding: u8,
    /// Offset of the payload from the packet start.
    pub payload_offset: usize,
    /// Payload length, padding excluded.
    pub payload_len: usize,
}

impl RtpHeader {
    /// Reads and checks the header of `packet` (version 2, CSRCs, extension
    /// and padding lengths within the packet).
    pub fn parse(packet: &[u8]) -> Result<Self, RtpError> {
        let r = rtp_rs::RtpReader::new(packet).map_err(|e| RtpError::BadRtp(format!("{e:?}")))?;
        let padding = r.padding().unwrap_or(0);
        let payload_offset = r.payload_offset();
        Ok(RtpHeader {
            marker: r.mark(),
            payload_type: r.payload_type(),
            sequence: r.sequence_number().into(),
            timestamp: r.timestamp(),
            ssrc: r.ssrc(),
            csrc_count: r.csrc_count(),
            extension: r.extension().is_some(),
            padding,
            payload_offset,
            payload_len: packet.len() - payload_offset - usize::from(padding),
        })
    }

    /// The payload of the packet this header was parsed from.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        packet
            .get(self.payload_offset..self.payload_offset + self.payload_len)
            .unwrap_or(&[])
    }
}

/// A parsed RTP packet borrowed from its buffer: the header fields through
/// accessors, and the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView<'a> {
    packet: &'a [u8],
    header: RtpHeader,
}

impl<'a> RtpView<'a> {
    /// Checks `packet` as [`RtpHeader::parse`] does and keeps a view of it.
    pub fn parse(packet: &'a [u8]) -> Result<Self, RtpError> {
        Ok(RtpView {
            packet,
            header: RtpHeader::parse(packet)?,
        })
    }

    /// The header fields.
    pub fn header(&self) -> &RtpHeader {
        &self.header
    }

    /// RTP version (always 2: other versions do not parse).
    pub fn version(&self) -> u8 {
        2
    }

    /// Marker bit.
    pub fn marker(&self) -> bool {
        self.header.marker
    }

    /// Payload type.
    pub fn payload_type(&self) -> u8 {
        self.header.payload_type
    }

    /// Sequence number.
    pub fn sequence_number(&self) -> u16 {
        self.header.sequence
    }

    /// RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        self.header.timestamp
    }

    /// Synchronisation source.
    pub fn ssrc(&self) -> u32 {
        self.header.ssrc
    }

    /// The payload, padding excluded.
    pub fn payload(&self) -> &'a [u8] {
        self.header.payload(self.packet)
    }
}

/// Overwrites sequence number, timestamp and SSRC of an RTP packet in place.
pub fn rewrite(
    packet: &mut [u8],
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) -> Result<(), RtpError> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return Err(RtpError::BadRtp(
            "shorter than 12 bytes or not version 2".into(),
        ));
    }
    packet[2..4].copy_from_slice(&sequence.to_be_bytes());
    packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Ok(())
}

/// Video codecs whose random-access points the proxy recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 / AVC, RFC 6184.
    H264,
    /// H.265 / HEVC, RFC 7798.
    H265,
    /// Anything else: every packet counts as a random-access point.
    Other,
}

impl Codec {
    /// The codec for an `a=rtpmap` encoding name (case-insensitive).
    pub fn from_encoding_name(name: &str) -> Codec {
        if name.eq_ignore_ascii_case("H264") {
            Codec::H264
        } else if name.eq_ignore_ascii_case("H265") || name.eq_ignore_ascii_case("HEVC") {
            Codec::H265
        } else {
            Codec::Other
        }
    }
}

/// Calls `f` with the type of every NAL unit that starts in this payload:
/// a single NAL unit, each unit of an aggregation packet, or a fragmented
/// unit's first fragment. Middle and last fragments start nothing.
fn for_each_nal_start(codec: Codec, payload: &[u8], mut f: impl FnMut(u8)) {
    match codec {
        Codec::H264 => {
            let Some(&first) = payload.first() else {
                return;
            };
            match first & 0x1f {
                t @ 1..=23 => f(t),
                24 => for_each_aggregated(&payload[1..], 1, |h| f(h & 0x1f)), // STAP-A
                28 | 29 => {
                    // FU-A / FU-B: FU header after the indicator.
                    if let Some(&fu) = payload.get(1) {
                        if fu & 0x80 != 0 {
                            f(fu & 0x1f);
                        }
                    }
                }
                _ => {} // STAP-B, MTAP: not produced by the servers we meet
            }
        }
        Codec::H265 => {
            let Some(&first) = payload.first() else {
                return;
            };
            if payload.len() < 2 {
                return;
            }
            match (first >> 1) & 0x3f {
                t @ 0..=47 => f(t),
                48 => for_each_aggregated(&payload[2..], 2, |h| f((h >> 1) & 0x3f)), // AP
                49 => {
                    if let Some(&fu) = payload.get(2) {
                        if fu & 0x80 != 0 {
                            f(fu & 0x3f);
                        }
                    }
                }
                _ => {}
            }
        }
        Codec::Other => {}
    }
}

/// Walks `size(16) NAL` units of an aggregation packet, calling `f` with
/// each unit's first header byte. Stops at a truncated unit.
fn for_each_aggregated(mut units: &[u8], min_nal: usize, mut f: impl FnMut(u8)) {
    while units.len() >= 2 {
        let size = usize::from(u16::from_be_bytes([units[0], units[1]]));
        let Some(nal) = units.get(2..2 + size) else {
            return;
        };
        if nal.len() >= min_nal {
            f(nal[0]);
        }
        units = &units[2 + size..];
    }
}

/// `true` if this RTP payload starts an IDR picture (H.264 NAL type 5) or an
/// IRAP picture (H.265 types 16–21). For [`Codec::Other`] every packet is a
/// random-access point.
pub fn is_random_access(codec: Codec, payload: &[u8]) -> bool {
    let mut found = codec == Codec::Other;
    for_each_nal_start(codec, payload, |t| {
        found |= match codec {
            Codec::H264 => t == 5,
            Codec::H265 => (16..=21).contains(&t),
            Codec::Other => true,
        }
    });
    found
}

/// `true` if this RTP payload carries a parameter set: H.264 SPS/PPS (7, 8),
/// H.265 VPS/SPS/PPS (32–34). Encoders send them just before a keyframe in
/// the same access unit (same RTP timestamp), so the first such packet is
/// where a joining player should start.
pub fn has_parameter_sets(codec: Codec, payload: &[u8]) -> bool {
    let mut found = false;
    for_each_nal_start(codec, payload, |t| {
        found |= match codec {
            Codec::H264 => t == 7 || t == 8,
            Codec::H265 => (32..=34).contains(&t),
            Codec::Other => false,
        }
    });
    found
}

/// A 64-bit NTP timestamp (seconds since 1900 in the upper half).
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().wrapping_add(UNIX_TO_NTP);
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Sender information of an RTCP sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// Wallclock time, as from [`ntp_timestamp`].
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_time: u32,
    /// Packets sent so far.
    pub packet_count: u32,
    /// Payload octets sent so far.
    pub octet_count: u32,
}

/// A reception report block (in an SR or RR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC of the source reported on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// What a compound RTCP packet says, as far as the proxy cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtcpSummary {
    /// Sender reports.
    pub sender_reports: Vec<SenderReport>,
    /// Report blocks as (reporter SSRC, block), from SRs and RRs.
    pub report_blocks: Vec<(u32, ReportBlock)>,
    /// SSRCs that said goodbye.
    pub bye: Vec<u32>,
}

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;

fn rtcp_header(out: &mut Vec<u8>, count: u8, pt: u8, body_words: usize) {
    out.push(0x80 | (count & 0x1f));
    out.push(pt);
    // Length in 32-bit words minus one; the header word is the "one".
    out.extend_from_slice(&(body_words as u16).to_be_bytes());
}

fn push_block(out: &mut Vec<u8>, b: &ReportBlock) {
    out.extend_from_slice(&b.ssrc.to_be_bytes());
    let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
    out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
    out.extend_from_slice(&b.highest_seq.to_be_bytes());
    out.extend_from_slice(&b.jitter.to_be_bytes());
    out.extend_from_slice(&b.last_sr.to_be_bytes());
    out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
}

fn push_sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    // SSRC + item (type, len, text) + at least one zero byte, padded to 4.
    let chunk = 4 + 2 + cname.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    rtcp_header(out, 1, PT_SDES, padded / 4);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1); // CNAME
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + padded - (4 + 2 + cname.len()), 0);
}

/// A compound RTCP packet: a sender report (no report blocks) followed by an
/// SDES CNAME, as RFC 3550 §6.1 requires.
pub fn build_sender_report(sr: &SenderReport, cname: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + 12 + cname.len());
    rtcp_header(&mut out, 0, PT_SR, 6);
    out.extend_from_slice(&sr.ssrc.to_be_bytes());
    out.extend_from_slice(&sr.ntp.to_be_bytes());
    out.extend_from_slice(&sr.rtp_time.to_be_bytes());
    out.extend_from_slice(&sr.packet_count.to_be_bytes());
    out.extend_from_slice(&sr.octet_count.to_be_bytes());
    push_sdes_cname(&mut out, sr.ssrc, cname);
    out
}

/// A compound RTCP packet: a receiver report with up to 31 blocks, then an
/// SDES CNAME.
pub fn build_receiver_report(ssrc: u32, blocks: &[ReportBlock], cname: &str) -> Vec<u8> {
    let blocks = &blocks[..blocks.len().min(31)];
    let mut out = Vec::with_capacity(8 + 24 * blocks.len() + 12 + cname.len());
    rtcp_header(&mut out, blocks.len() as u8, PT_RR, 1 + 6 * blocks.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    for b in blocks {
        push_block(&mut out, b);
    }
    push_sdes_cname(&mut out, ssrc, cname);
    out
}

/// The SSRC of an RTP packet, read without checking the rest of its
/// header: for a forwarder that notes it for every packet it passes on (to
/// say BYE with it) and checks nothing else of them.
pub fn ssrc_of(packet: &[u8]) -> Option<u32> {
    let head = packet.get(..12)?;
    (head[0] >> 6 == 2).then(|| u32::from_be_bytes([head[8], head[9], head[10], head[11]]))
}

/// A compound RTCP BYE for `ssrc`: an empty receiver report (a compound
/// packet must start with SR or RR) followed by the BYE.
pub fn build_bye(ssrc: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    rtcp_header(&mut out, 0, PT_RR, 1);
    out.extend_from_slice(&ssrc.to_be_bytes());
    rtcp_header(&mut out, 1, PT_BYE, 1);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_block(b: &[u8]) -> ReportBlock {
    let word = be32(b, 4);
    // Sign-extend the 24-bit cumulative loss.
    let cumulative_lost = ((word << 8) as i32) >> 8;
    ReportBlock {
        ssrc: be32(b, 0),
        fraction_lost: (word >> 24) as u8,
        cumulative_lost,
        highest_seq: be32(b, 8),
        jitter: be32(b, 12),
        last_sr: be32(b, 16),
        delay_since_last_sr: be32(b, 20),
    }
}

/// Reads a compound RTCP packet: sender reports, report blocks and BYEs.
/// Other packet types (SDES, APP, feedback) are skipped.
pub fn parse_rtcp(data: &[u8]) -> Result<RtcpSummary, RtpError> {
    let mut summary = RtcpSummary::default();
    let mut rest = data;
    if rest.is_empty() {
        return Err(RtpError::BadRtcp("empty"));
    }
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtpError::BadRtcp("truncated header"));
        }
        if rest[0] >> 6 != 2 {
            return Err(RtpError::BadRtcp("version is not 2"));
        }
        let count = usize::from(rest[0] & 0x1f);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let Some(packet) = rest.get(..len) else {
            return Err(RtpError::BadRtcp("length past the end of the datagram"));
        };
        let blocks_at = match pt {
            PT_SR if len >= 28 => {
                summary.sender_reports.push(SenderReport {
                    ssrc: be32(packet, 4),
                    ntp: (u64::from(be32(packet, 8)) << 32) | u64::from(be32(packet, 12)),
                    rtp_time: be32(packet, 16),
                    packet_count: be32(packet, 20),
                    octet_count: be32(packet, 24),
                });
                Some(28)
            }
            PT_RR if len >= 8 => Some(8),
            PT_SR | PT_RR => return Err(RtpError::BadRtcp("report shorter than its header")),
            PT_BYE => {
                let ssrcs = packet[4..].chunks_exact(4).take(count);
                summary.bye.extend(ssrcs.map(|c| be32(c, 0)));
                None
            }
            _ => None,
        };
        if let Some(at) = blocks_at {
            let reporter = be32(packet, 4);
            let blocks = packet[at..].chunks_exact(24).take(count);
            summary
                .report_blocks
                .extend(blocks.map(|b| (reporter, read_block(b))));
        }
        rest = &rest[len..];
    }
    Ok(summary)
}

/// `true` if the compound RTCP packet contains a BYE (malformed input: `false`).
pub fn contains_bye(data: &[u8]) -> bool {
    parse_rtcp(data).is_ok_and(|s| !s.bye.is_empty())
}

#[cfg(test)]
mod tests;
