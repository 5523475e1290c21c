//! What H.264 and H.265 depacketizing share: putting NAL units together
//! into access units (boundary: a new RTP timestamp or the marker bit),
//! reassembling fragmented NAL units, dropping access units that lost a
//! part, and keeping the parameter sets learnt in band.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use streamcache_types::Npt;

use super::rtp_in::Packet;
use super::DepacketizeStats;
use crate::frame::Frame;

/// An access unit larger than this is not a picture but a broken sender;
/// it is dropped rather than grown without bound.
const MAX_AU_BYTES: usize = 16 << 20;

/// More parameter sets of one kind than any encoder uses.
const MAX_PARAMETER_SETS: usize = 32;

/// The parameter sets of one kind (SPS, PPS, VPS) the track uses.
#[derive(Debug, Default)]
pub(super) struct ParamSets {
    sets: Vec<Bytes>,
    /// The RTP timestamp of the access unit whose in-band sets replaced
    /// the list last.
    replaced_at: Option<u32>,
}

impl ParamSets {
    pub fn new(sets: Vec<Bytes>) -> ParamSets {
        ParamSets {
            sets,
            replaced_at: None,
        }
    }

    pub fn sets(&self) -> &[Bytes] {
        &self.sets
    }

    /// A set seen in band in the access unit at `timestamp`. A set not
    /// known yet means the encoder changed its parameters: the sets of that
    /// access unit replace the list. (Streams that spread several sets of
    /// one kind over different access units keep only the latest.)
    pub fn offer(&mut self, nal: &[u8], timestamp: u32) {
        if self.sets.iter().any(|s| s == nal) {
            return;
        }
        if self.replaced_at != Some(timestamp) {
            self.sets.clear();
            self.replaced_at = Some(timestamp);
        }
        if self.sets.len() < MAX_PARAMETER_SETS {
            self.sets.push(Bytes::copy_from_slice(nal));
        }
    }
}

#[derive(Debug)]
struct AccessUnit {
    timestamp: u32,
    pts: Npt,
    /// Length-prefixed NAL units.
    data: BytesMut,
    keyframe: bool,
    /// Part of it was lost or malformed: dropped when closed.
    broken: bool,
}

#[derive(Debug)]
pub(super) struct Assembler {
    track: usize,
    au: Option<AccessUnit>,
    /// A fragmented NAL unit being put together, its header rebuilt.
    fragment: Option<BytesMut>,
    /// The sender sets the marker bit on each access unit's last packet
    /// (seen once): an access unit still open when packets are lost has
    /// lost its tail.
    uses_marker: bool,
    /// The next frame out does not follow the last one.
    discontinuity: bool,
    frames: VecDeque<Frame>,
    pub stats: DepacketizeStats,
}

impl Assembler {
    pub fn new(track: usize) -> Assembler {
        Assembler {
            track,
            au: None,
            fragment: None,
            uses_marker: false,
            discontinuity: false,
            frames: VecDeque::new(),
            stats: DepacketizeStats::default(),
        }
    }

    /// Before a packet's NAL units: notes loss, closes the access unit in
    /// progress if the packet starts another one, and opens one for it.
    pub fn begin(&mut self, p: &Packet, media_time: Npt) {
        if p.gap {
            self.discontinuity = true;
            let fragment_open = self.fragment.is_some();
            if let Some(au) = &mut self.au {
                // The lost packets may have belonged to it.
                if fragment_open || au.timestamp == p.timestamp || self.uses_marker {
                    au.broken = true;
                }
            }
        }
        if self
            .au
            .as_ref()
            .is_some_and(|au| au.timestamp != p.timestamp)
        {
            self.close();
        }
        self.au.get_or_insert_with(|| AccessUnit {
            timestamp: p.timestamp,
            pts: media_time,
            data: BytesMut::new(),
            keyframe: false,
            broken: false,
        });
    }

    /// After a packet's NAL units: the marker bit ends the access unit.
    pub fn end(&mut self, marker: bool) {
        if marker {
            self.uses_marker = true;
            self.close();
        }
    }

    /// A whole NAL unit of the access unit in progress.
    pub fn nal(&mut self, nal: &[u8], keyframe: bool) {
        let Some(au) = &mut self.au else {
            return;
        };
        let Ok(len) = u32::try_from(nal.len()) else {
            au.broken = true;
            return;
        };
        if nal.is_empty() || au.data.len() + 4 + nal.len() > MAX_AU_BYTES {
            self.stats.malformed_packets += 1;
            au.broken = true;
            return;
        }
        au.data.put_u32(len);
        au.data.extend_from_slice(nal);
        au.keyframe |= keyframe;
    }

    /// A piece of a fragmented NAL unit (FU-A, H.265 FU): `header` is the
    /// NAL header rebuilt from the first piece. The whole NAL unit once the
    /// last piece is in.
    pub fn fragment(
        &mut self,
        start: bool,
        end: bool,
        header: &[u8],
        data: &[u8],
    ) -> Option<Bytes> {
        if start {
            if self.fragment.is_some() {
                // The previous one never ended.
                self.broken();
            }
            let mut f = BytesMut::from(header);
            f.extend_from_slice(data);
            self.fragment = Some(f);
        } else {
            let Some(f) = &mut self.fragment else {
                // Its start was lost.
                self.broken();
                return None;
            };
            f.extend_from_slice(data);
            if f.len() > MAX_AU_BYTES {
                self.fragment = None;
                self.malformed();
                return None;
            }
        }
        if end {
            self.fragment.take().map(BytesMut::freeze)
        } else {
            None
        }
    }

    /// A malformed packet: the access unit it belongs to is dropped.
    pub fn malformed(&mut self) {
        self.stats.malformed_packets += 1;
        self.broken();
    }

    /// A packet of a kind not handled: likewise.
    pub fn unsupported(&mut self) {
        self.stats.unsupported_packets += 1;
        self.broken();
    }

    fn broken(&mut self) {
        if let Some(au) = &mut self.au {
            au.broken = true;
        }
    }

    /// Hands out the access unit in progress, or drops it if a part of it
    /// is missing.
    pub fn close(&mut self) {
        let fragment_open = self.fragment.take().is_some();
        let Some(au) = self.au.take() else {
            return;
        };
        if au.broken || fragment_open {
            self.stats.dropped_frames += 1;
            self.discontinuity = true;
            return;
        }
        if au.data.is_empty() {
            return;
        }
        self.frames.push_back(Frame {
            track: self.track,
            pts: au.pts,
            keyframe: au.keyframe,
            discontinuity: std::mem::take(&mut self.discontinuity),
            data: au.data.freeze(),
        });
    }

    pub fn pop(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }
}

/// The NAL units of an aggregation packet (H.264 STAP-A, H.265 AP), each
/// after its 16-bit size, handed to `nal` in order; `Err` at the first one
/// cut short (those before it were handed out).
pub(super) fn aggregated<'a>(mut rest: &'a [u8], mut nal: impl FnMut(&'a [u8])) -> Result<(), ()> {
    while !rest.is_empty() {
        let [hi, lo, tail @ ..] = rest else {
            return Err(());
        };
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (Some(unit), Some(after)) = (tail.get(..size), tail.get(size..)) else {
            return Err(());
        };
        nal(unit);
        rest = after;
    }
    Ok(())
}
