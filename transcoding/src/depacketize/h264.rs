//! H.264 over RTP (RFC 6184), packetization modes 0 and 1: single NAL unit
//! packets, STAP-A and FU-A. STAP-B, MTAP16/24 and FU-B (interleaved mode)
//! are counted as unsupported and dropped, with the access unit they
//! belong to. Every NAL unit is kept, access unit delimiters and in-band
//! parameter sets included.

use streamcache_types::Npt;

use super::fmtp;
use super::rtp_in::RtpIn;
use super::video::{aggregated, Assembler, ParamSets};
use super::{DepacketizeStats, Depacketizer};
use crate::frame::{Codec, Frame, TrackSpec};

const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

pub(super) struct H264 {
    rtp: RtpIn,
    au: Assembler,
    sps: ParamSets,
    pps: ParamSets,
}

impl H264 {
    pub fn new(track: usize, spec: &TrackSpec) -> H264 {
        let mut sps = Vec::new();
        let mut pps = Vec::new();
        let sprop = fmtp::param(spec.fmtp.as_deref(), "sprop-parameter-sets");
        for nal in sprop.map(fmtp::base64_list).unwrap_or_default() {
            match nal.first().map(|h| h & 0x1f) {
                Some(SPS) => sps.push(nal),
                Some(PPS) => pps.push(nal),
                _ => {}
            }
        }
        H264 {
            rtp: RtpIn::new(spec.payload_type),
            au: Assembler::new(track),
            sps: ParamSets::new(sps),
            pps: ParamSets::new(pps),
        }
    }

    fn nal(&mut self, nal: &[u8], timestamp: u32) {
        let kind = nal.first().map_or(0, |h| h & 0x1f);
        match kind {
            SPS => self.sps.offer(nal, timestamp),
            PPS => self.pps.offer(nal, timestamp),
            _ => {}
        }
        self.au.nal(nal, kind == IDR);
    }

    /// A STAP-A's NAL units, each after its 16-bit size.
    fn stap_a(&mut self, rest: &[u8], timestamp: u32) {
        if aggregated(rest, |nal| self.nal(nal, timestamp)).is_err() {
            self.au.malformed();
        }
    }
}

impl Depacketizer for H264 {
    fn push(&mut self, rtp: &[u8], media_time: Npt, discontinuity: bool) {
        let Some(p) = self.rtp.accept(rtp, discontinuity, &mut self.au.stats) else {
            return;
        };
        self.au.begin(&p, media_time);
        let (&indicator, rest) = p.payload.split_first().unwrap_or((&0, &[]));
        match indicator & 0x1f {
            1..=23 => self.nal(p.payload, p.timestamp),
            STAP_A => self.stap_a(rest, p.timestamp),
            FU_A => match rest {
                [fu, data @ ..] => {
                    // The NAL header: F and NRI from the indicator, the
                    // type from the FU header.
                    let header = [(indicator & 0xe0) | (fu & 0x1f)];
                    let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                    if let Some(nal) = self.au.fragment(start, end, &header, data) {
                        self.nal(&nal, p.timestamp);
                    }
                }
                [] => self.au.malformed(),
            },
            // STAP-B, MTAP16, MTAP24, FU-B.
            25..=27 | 29 => self.au.unsupported(),
            // 0, 30, 31: reserved.
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
        let (sps, pps) = (self.sps.sets(), self.pps.sets());
        (!sps.is_empty() && !pps.is_empty()).then(|| Codec::H264 {
            sps: sps.to_vec(),
            pps: pps.to_vec(),
        })
    }

    fn stats(&self) -> DepacketizeStats {
        self.au.stats
    }
}
