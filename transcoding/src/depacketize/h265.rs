//! H.265 over RTP (RFC 7798) without DONL (`sprop-max-don-diff` 0, the
//! default): single NAL unit packets, aggregation packets (AP) and
//! fragmentation units (FU). PACI and unassigned types are counted as
//! unsupported and dropped with their access unit. A track whose fmtp says
//! DONL fields are present is unsupported as a whole.

use streamcache_types::Npt;

use super::fmtp;
use super::rtp_in::RtpIn;
use super::video::{aggregated, Assembler, ParamSets};
use super::{DepacketizeStats, Depacketizer};
use crate::frame::{Codec, Frame, TrackSpec};

const VPS: u8 = 32;
const SPS: u8 = 33;
const PPS: u8 = 34;
const AP: u8 = 48;
const FU: u8 = 49;

/// The type in a 2-byte NAL unit (or payload) header.
fn nal_type(header: u8) -> u8 {
    (header >> 1) & 0x3f
}

pub(super) struct H265 {
    rtp: RtpIn,
    au: Assembler,
    vps: ParamSets,
    sps: ParamSets,
    pps: ParamSets,
}

impl H265 {
    /// `None` when the fmtp announces DONL fields (RFC 7798 §7.1:
    /// `sprop-max-don-diff` > 0 or `sprop-depack-buf-nalus` > 0).
    pub fn new(track: usize, spec: &TrackSpec) -> Option<H265> {
        let f = spec.fmtp.as_deref();
        let positive = |key| fmtp::number(f, key).is_some_and(|n| n > 0);
        if positive("sprop-max-don-diff") || positive("sprop-depack-buf-nalus") {
            return None;
        }
        let sets = |key| {
            ParamSets::new(
                fmtp::param(f, key)
                    .map(fmtp::base64_list)
                    .unwrap_or_default(),
            )
        };
        Some(H265 {
            rtp: RtpIn::new(spec.payload_type),
            au: Assembler::new(track),
            vps: sets("sprop-vps"),
            sps: sets("sprop-sps"),
            pps: sets("sprop-pps"),
        })
    }

    fn nal(&mut self, nal: &[u8], timestamp: u32) {
        if nal.len() < 2 {
            return self.au.malformed();
        }
        let kind = nal.first().map_or(0, |&h| nal_type(h));
        match kind {
            VPS => self.vps.offer(nal, timestamp),
            SPS => self.sps.offer(nal, timestamp),
            PPS => self.pps.offer(nal, timestamp),
            _ => {}
        }
        // IRAP pictures: BLA, IDR, CRA and the reserved IRAP types.
        self.au.nal(nal, (16..=23).contains(&kind));
    }

    /// An AP's NAL units, each after its 16-bit size.
    fn aggregation(&mut self, rest: &[u8], timestamp: u32) {
        if aggregated(rest, |nal| self.nal(nal, timestamp)).is_err() {
            self.au.malformed();
        }
    }
}

impl Depacketizer for H265 {
    fn push(&mut self, rtp: &[u8], media_time: Npt, discontinuity: bool) {
        let Some(p) = self.rtp.accept(rtp, discontinuity, &mut self.au.stats) else {
            return;
        };
        self.au.begin(&p, media_time);
        match p.payload {
            [h0, h1, rest @ ..] => match nal_type(*h0) {
                0..=47 => self.nal(p.payload, p.timestamp),
                AP => self.aggregation(rest, p.timestamp),
                FU => match rest {
                    [fu, data @ ..] => {
                        // The NAL header: the payload header with the
                        // type from the FU header.
                        let header = [(h0 & 0x81) | ((fu & 0x3f) << 1), *h1];
                        let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                        if let Some(nal) = self.au.fragment(start, end, &header, data) {
                            self.nal(&nal, p.timestamp);
                        }
                    }
                    [] => self.au.malformed(),
                },
                // PACI (50) and the unassigned 51..=63.
                _ => self.au.unsupported(),
            },
            _ => self.au.malformed(),
        }
        self.au.end(p.marker);
    }

    fn pop(&mut self) -> Option<Frame> {
        self.au.pop()
    }

    fn finish(&mut self) {
        self.au.close();
    }

    fn codec(&self) -> Option<Codec> {
        let (vps, sps, pps) = (self.vps.sets(), self.sps.sets(), self.pps.sets());
        let known = !vps.is_empty() && !sps.is_empty() && !pps.is_empty();
        known.then(|| Codec::H265 {
            vps: vps.to_vec(),
            sps: sps.to_vec(),
            pps: pps.to_vec(),
        })
    }

    fn stats(&self) -> DepacketizeStats {
        self.au.stats
    }
}
