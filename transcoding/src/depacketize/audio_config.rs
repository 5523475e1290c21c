//! The parts of an MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)
//! that timing and containers need: sample rate, channels, samples per
//! frame — and where the config ends, to cut it out of a LATM
//! StreamMuxConfig.

use super::bits::Bits;

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AudioConfig {
    /// The core sampling frequency: the rate at which each AU holds
    /// `frame_length` samples (for HE-AAC, half the output rate).
    pub sample_rate: u32,
    /// 0 when given by a program config element (not read here).
    pub channels: u16,
    /// 1024, or 960 with the frameLengthFlag.
    pub frame_length: u32,
}

/// Reads an AudioSpecificConfig from `bits`, leaving it just past the
/// config's GASpecificConfig (a trailing SBR/PS sync extension is not
/// read). `None` when malformed or not a GA (AAC family) object type.
pub(super) fn read(bits: &mut Bits) -> Option<AudioConfig> {
    let mut object_type = read_object_type(bits)?;
    let sample_rate = read_sample_rate(bits)?;
    let channels = bits.read(4)? as u16;
    if object_type == 5 || object_type == 29 {
        // Explicit SBR/PS: the extension rate, then the core object type.
        read_sample_rate(bits)?;
        object_type = read_object_type(bits)?;
    }
    if !matches!(object_type, 1..=4 | 6 | 7 | 17 | 19..=23) {
        return None;
    }
    // GASpecificConfig.
    let frame_length = if bits.read(1)? == 1 { 960 } else { 1024 };
    if bits.read(1)? == 1 {
        bits.skip(14)?; // coreCoderDelay
    }
    let extension = bits.read(1)? == 1;
    if channels == 0 {
        // A program_config_element follows: not parsed.
        return None;
    }
    if object_type == 6 || object_type == 20 {
        bits.skip(3)?; // layerNr
    }
    if extension {
        if object_type == 22 {
            bits.skip(16)?; // numOfSubFrame, layer_length
        }
        if matches!(object_type, 17 | 19 | 20 | 23) {
            bits.skip(3)?; // the three resilience flags
        }
        bits.skip(1)?; // extensionFlag3
    }
    Some(AudioConfig {
        sample_rate,
        channels,
        frame_length,
    })
}

fn read_object_type(bits: &mut Bits) -> Option<u32> {
    match bits.read(5)? {
        31 => Some(32 + bits.read(6)?),
        t => Some(t),
    }
}

fn read_sample_rate(bits: &mut Bits) -> Option<u32> {
    match bits.read(4)? {
        0xf => bits.read(24).filter(|&r| r > 0),
        i => SAMPLE_RATES.get(i as usize).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_configs() {
        // The sample title's: AAC-LC 48 kHz mono, then its sync extension.
        let mut b = Bits::new(&[0x11, 0x88, 0x56, 0xe5, 0x00]);
        let c = read(&mut b).expect("config");
        assert_eq!(
            (c.sample_rate, c.channels, c.frame_length),
            (48000, 1, 1024)
        );
        assert_eq!(b.position(), 16);
        // AAC-LC 44.1 kHz stereo, 960-sample frames.
        let c = read(&mut Bits::new(&[0x12, 0x14])).expect("config");
        assert_eq!((c.sample_rate, c.channels, c.frame_length), (44100, 2, 960));
        // HE-AAC (object type 5): 24 kHz core, 48 kHz out, stereo.
        let c = read(&mut Bits::new(&[0x2b, 0x11, 0x88, 0x00])).expect("config");
        assert_eq!((c.sample_rate, c.channels), (24000, 2));
        // A PCE, a bad rate index, a non-AAC object type, too short.
        for bad in [&[0x11, 0x80][..], &[0x16, 0x88], &[0x41, 0x88], &[0x11]] {
            assert_eq!(read(&mut Bits::new(bad)), None, "{bad:02x?}");
        }
    }
}
