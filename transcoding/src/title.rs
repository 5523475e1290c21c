//! A title's stored records in, frames out: one depacketizer per track,
//! fed in play order. Kept apart from the depacketizers themselves: this
//! is only the glue a caller (`streamcache cache export`, a server) runs.

use std::collections::VecDeque;

use streamcache_types::Npt;

use crate::depacketize::{for_track, DepacketizeStats};
use crate::{Codec, Depacketizer, Frame, TrackSpec, Unsupported};

/// Frames of every track of a title, in the order their records come.
pub struct Frames {
    depacketizers: Vec<Box<dyn Depacketizer>>,
    /// A track's frames start at its first keyframe (a cut may land
    /// mid-GOP).
    started: Vec<bool>,
    ready: VecDeque<Frame>,
}

impl Frames {
    pub fn new(specs: &[TrackSpec]) -> Result<Frames, Unsupported> {
        let depacketizers = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| for_track(i, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Frames {
            started: vec![false; depacketizers.len()],
            depacketizers,
            ready: VecDeque::new(),
        })
    }

    /// One stored RTP record of track `track` (others are ignored).
    pub fn push(&mut self, track: usize, rtp: &[u8], media_time: Npt, discontinuity: bool) {
        if let Some(d) = self.depacketizers.get_mut(track) {
            d.push(rtp, media_time, discontinuity);
            self.collect(track);
        }
    }

    /// Ends every track: what is complete comes out of [`Frames::pop`].
    pub fn finish(&mut self) {
        for track in 0..self.depacketizers.len() {
            self.depacketizers[track].finish();
            self.collect(track);
        }
    }

    pub fn pop(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// Each track's codec, once known.
    pub fn codecs(&self) -> Vec<Option<Codec>> {
        self.depacketizers.iter().map(|d| d.codec()).collect()
    }

    pub fn stats(&self) -> Vec<DepacketizeStats> {
        self.depacketizers.iter().map(|d| d.stats()).collect()
    }

    fn collect(&mut self, track: usize) {
        while let Some(frame) = self.depacketizers[track].pop() {
            if frame.keyframe {
                self.started[track] = true;
            }
            if self.started[track] {
                self.ready.push_back(frame);
            }
        }
    }
}
