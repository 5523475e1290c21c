//! What the sample entries need from the parameter sets: the picture size,
//! and for hvcC the profile/tier/level fields. Only the leading fields of a
//! sequence parameter set are read; a set too short or malformed gives
//! `None` (the muxers then answer `MuxError::BadParameterSets`).

/// The fields of an H.264 SPS the avcC and the visual sample entry carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvcSps {
    pub profile_idc: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub width: u32,
    pub height: u32,
}

/// The fields of an H.265 SPS the hvcC and the visual sample entry carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HevcSps {
    pub max_sub_layers: u8,
    pub temporal_id_nested: bool,
    pub profile_space: u8,
    pub tier: bool,
    pub profile_idc: u8,
    pub compatibility: [u8; 4],
    pub constraints: [u8; 6],
    pub level_idc: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
    pub width: u32,
    pub height: u32,
}

/// The NAL unit's payload without emulation-prevention bytes.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    /// Exp-Golomb, unsigned; values past 2^31 are refused.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let v = i64::from(self.ue()?);
        Some(if v % 2 == 1 { (v + 1) / 2 } else { -(v / 2) })
    }
}

/// Parses an H.264 SPS NAL unit (header byte included).
pub fn avc_sps(nal: &[u8]) -> Option<AvcSps> {
    let data = rbsp(nal.get(1..)?);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    let profile_idc = r.bits(8)? as u8;
    r.skip(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let (mut chroma, mut luma, mut chroma_depth) = (1, 8, 8);
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = r.ue()?;
        if chroma == 3 {
            r.skip(1)?; // separate_colour_plane_flag
        }
        luma = r.ue()? + 8;
        chroma_depth = r.ue()? + 8;
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.skip(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.skip(1)?;
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    Some(AvcSps {
        profile_idc,
        chroma_format_idc: u8::try_from(chroma).ok()?,
        bit_depth_luma: u8::try_from(luma).ok()?,
        bit_depth_chroma: u8::try_from(chroma_depth).ok()?,
        width: (width_mbs * 16).checked_sub(crop_x)?,
        height: ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?,
    })
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Parses an H.265 SPS NAL unit (both header bytes included).
pub fn hevc_sps(nal: &[u8]) -> Option<HevcSps> {
    let data = rbsp(nal.get(2..)?);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    r.skip(4)?; // sps_video_parameter_set_id
    let sub_layers_minus1 = r.bits(3)?;
    let temporal_id_nested = r.bit()? == 1;
    let profile_space = r.bits(2)? as u8;
    let tier = r.bit()? == 1;
    let profile_idc = r.bits(5)? as u8;
    let mut compatibility = [0u8; 4];
    for b in &mut compatibility {
        *b = r.bits(8)? as u8;
    }
    let mut constraints = [0u8; 6];
    for b in &mut constraints {
        *b = r.bits(8)? as u8;
    }
    let level_idc = r.bits(8)? as u8;
    let mut present = Vec::new();
    for _ in 0..sub_layers_minus1 {
        present.push((r.bit()?, r.bit()?));
    }
    if sub_layers_minus1 > 0 {
        r.skip(2 * (8 - sub_layers_minus1 as usize))?;
    }
    for (profile, level) in present {
        r.skip(88 * profile as usize + 8 * level as usize)?;
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma = r.ue()?;
    if chroma == 3 {
        r.skip(1)?;
    }
    let (mut width, mut height) = (r.ue()?, r.ue()?);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (sub_w, sub_h) = match chroma {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        width = width.checked_sub(sub_w * (left + right))?;
        height = height.checked_sub(sub_h * (top + bottom))?;
    }
    Some(HevcSps {
        max_sub_layers: sub_layers_minus1 as u8 + 1,
        temporal_id_nested,
        profile_space,
        tier,
        profile_idc,
        compatibility,
        constraints,
        level_idc,
        chroma_format_idc: u8::try_from(chroma).ok()?,
        bit_depth_luma_minus8: u8::try_from(r.ue()?).ok()?,
        bit_depth_chroma_minus8: u8::try_from(r.ue()?).ok()?,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_sps_of_x264_320x240() {
        // ffmpeg -f lavfi testsrc2=size=320x240 -c:v libx264 (High, 4:2:0).
        let sps = [
            0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03,
            0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49,
        ];
        let parsed = avc_sps(&sps).expect("parses");
        assert_eq!((parsed.width, parsed.height), (320, 240));
        assert_eq!(parsed.profile_idc, 100);
        assert_eq!(parsed.chroma_format_idc, 1);
        assert_eq!((parsed.bit_depth_luma, parsed.bit_depth_chroma), (8, 8));
    }

    #[test]
    fn h264_sps_with_cropping_1080p() {
        // libx264 1920x1080: 68 macroblock rows, 8 lines cropped.
        let sps = [
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc6, 0x58,
        ];
        let parsed = avc_sps(&sps).expect("parses");
        assert_eq!((parsed.width, parsed.height), (1920, 1080));
    }

    #[test]
    fn h265_sps_of_x265_352x288() {
        let sps = [
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0b, 0x08, 0x04, 0x85, 0x96, 0x56, 0x69, 0x24, 0xca,
            0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
        ];
        let parsed = hevc_sps(&sps).expect("parses");
        assert_eq!((parsed.width, parsed.height), (352, 288));
        assert_eq!((parsed.profile_idc, parsed.level_idc), (1, 60));
        assert_eq!(parsed.compatibility, [0x60, 0, 0, 0]);
        assert_eq!(parsed.chroma_format_idc, 1);
    }

    #[test]
    fn truncated_sets_are_refused() {
        assert_eq!(avc_sps(&[0x67, 0x64]), None);
        assert_eq!(hevc_sps(&[0x42, 0x01, 0x01]), None);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
