//! Audio frames out: timing of the several frames a packet may hold, and
//! the discontinuity mark.

use std::collections::VecDeque;

use bytes::Bytes;
use streamcache_types::Npt;

use crate::frame::Frame;

#[derive(Debug)]
pub(super) struct AudioOut {
    track: usize,
    /// Samples per frame and the rate they are counted at.
    frame_length: u64,
    sample_rate: u64,
    /// The next frame out starts a new timeline piece.
    discontinuity: bool,
    frames: VecDeque<Frame>,
}

impl AudioOut {
    pub fn new(track: usize, frame_length: u32, sample_rate: u32) -> AudioOut {
        AudioOut {
            track,
            frame_length: frame_length.into(),
            sample_rate: sample_rate.max(1).into(),
            discontinuity: false,
            frames: VecDeque::new(),
        }
    }

    pub fn mark_discontinuity(&mut self) {
        self.discontinuity = true;
    }

    /// Frame `index` of a packet whose first frame plays at `media_time`:
    /// each later one a frame's duration after the previous (computed
    /// from the index, so that no rounding accumulates).
    pub fn push(&mut self, media_time: Npt, index: u64, data: Bytes) {
        let offset_ns = u128::from(index) * u128::from(self.frame_length) * 1_000_000_000
            / u128::from(self.sample_rate);
        let offset = Npt::from_ns(u64::try_from(offset_ns).unwrap_or(u64::MAX));
        self.frames.push_back(Frame {
            track: self.track,
            pts: media_time.saturating_add(offset),
            keyframe: true,
            discontinuity: std::mem::take(&mut self.discontinuity),
            data,
        });
    }

    pub fn pop(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }
}
