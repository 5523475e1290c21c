//! What MP4 and fragmented MP4 share: a track's sample entry (from its
//! codec) and the trak around a sample table.

use mp4_atom as atom;
use mp4_atom::esds;

use super::params::{avc_sps, hevc_sps};
use super::timing::timescale;
use super::MuxError;
use crate::frame::Codec;

/// Movie timescale (mvhd, tkhd, elst): milliseconds.
pub const MOVIE_TIMESCALE: u32 = 1000;

/// A track's description in an MP4.
pub struct Entry {
    pub sample_entry: atom::Codec,
    pub timescale: u32,
    pub video: Option<(u16, u16)>,
}

/// The sample entry of `codec` (track `track` in errors).
pub fn entry(track: usize, codec: &Codec) -> Result<Entry, MuxError> {
    let bad = || MuxError::BadParameterSets {
        track,
        codec: codec.name(),
    };
    let (sample_entry, video) = match codec {
        Codec::H264 { sps, pps } => {
            let first = sps.first().ok_or_else(bad)?;
            let parsed = avc_sps(first).ok_or_else(bad)?;
            let size = dimensions(parsed.width, parsed.height).ok_or_else(bad)?;
            if pps.is_empty() || first.len() < 4 {
                return Err(bad());
            }
            let high = !matches!(parsed.profile_idc, 66 | 77 | 88);
            let avcc = atom::Avcc {
                configuration_version: 1,
                avc_profile_indication: first[1],
                profile_compatibility: first[2],
                avc_level_indication: first[3],
                length_size: 4,
                sequence_parameter_sets: sps.iter().map(|s| s.to_vec()).collect(),
                picture_parameter_sets: pps.iter().map(|p| p.to_vec()).collect(),
                ext: high.then(|| atom::AvccExt {
                    chroma_format: parsed.chroma_format_idc,
                    bit_depth_luma: parsed.bit_depth_luma,
                    bit_depth_chroma: parsed.bit_depth_chroma,
                    sequence_parameter_sets_ext: Vec::new(),
                }),
            };
            let avc1 = atom::Avc1 {
                visual: visual(size),
                avcc,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: Default::default(),
            };
            (avc1.into(), Some(size))
        }
        Codec::H265 { vps, sps, pps } => {
            let first = sps.first().ok_or_else(bad)?;
            let p = hevc_sps(first).ok_or_else(bad)?;
            let size = dimensions(p.width, p.height).ok_or_else(bad)?;
            if vps.is_empty() || pps.is_empty() {
                return Err(bad());
            }
            let array = |nal_unit_type: u8, sets: &[bytes::Bytes]| atom::HvcCArray {
                completeness: true,
                nal_unit_type,
                nalus: sets.iter().map(|s| s.to_vec()).collect(),
            };
            let hvcc = atom::Hvcc {
                configuration_version: 1,
                general_profile_space: p.profile_space,
                general_tier_flag: p.tier,
                general_profile_idc: p.profile_idc,
                general_profile_compatibility_flags: p.compatibility,
                general_constraint_indicator_flags: p.constraints,
                general_level_idc: p.level_idc,
                min_spatial_segmentation_idc: 0,
                parallelism_type: 0,
                chroma_format_idc: p.chroma_format_idc,
                bit_depth_luma_minus8: p.bit_depth_luma_minus8,
                bit_depth_chroma_minus8: p.bit_depth_chroma_minus8,
                avg_frame_rate: 0,
                constant_frame_rate: 0,
                num_temporal_layers: p.max_sub_layers,
                temporal_id_nested: p.temporal_id_nested,
                length_size_minus_one: 3,
                arrays: vec![array(32, vps), array(33, sps), array(34, pps)],
            };
            let hvc1 = atom::Hvc1 {
                visual: visual(size),
                hvcc,
                lhvc: None,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                ccst: None,
                spatial: Default::default(),
            };
            (hvc1.into(), Some(size))
        }
        Codec::Aac {
            config,
            sample_rate,
            channels,
        } => {
            if config.len() < 2 {
                return Err(bad());
            }
            let mp4a = atom::Mp4a {
                audio: audio(*channels, *sample_rate),
                esds: atom::Esds {
                    es_desc: esds::EsDescriptor {
                        es_id: u16::try_from(track + 1).unwrap_or(u16::MAX),
                        dec_config: esds::DecoderConfig {
                            object_type_indication: 0x40, // MPEG-4 audio
                            stream_type: 5,               // audio
                            up_stream: 0,
                            dec_specific: Some(esds::DecoderSpecific {
                                profile: config[0] >> 3,
                                freq_index: ((config[0] & 7) << 1) | (config[1] >> 7),
                                chan_conf: (config[1] >> 3) & 0xf,
                                raw: config.to_vec(),
                            }),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            };
            (mp4a.into(), None)
        }
        Codec::Opus { channels } => {
            // Channel mapping family 0 covers mono and stereo; RTP (RFC
            // 7587) carries no mapping table for more.
            let count = u8::try_from(*channels).ok().filter(|c| (1..=2).contains(c));
            let Some(count) = count else {
                return Err(MuxError::Unsupported {
                    codec: "Opus with more than two channels",
                    container: "MP4",
                });
            };
            let opus = atom::Opus {
                audio: audio(*channels, 48_000),
                dops: atom::Dops {
                    output_channel_count: count,
                    // RTP does not carry the encoder's pre-skip.
                    pre_skip: 0,
                    input_sample_rate: 48_000,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            };
            (opus.into(), None)
        }
        // ISO BMFF has no registered G.711 sample entry (`ulaw`/`alaw` are
        // QuickTime's), and mp4-atom cannot write one.
        Codec::Pcmu { .. } | Codec::Pcma { .. } => {
            return Err(MuxError::Unsupported {
                codec: codec.name(),
                container: "MP4",
            })
        }
    };
    Ok(Entry {
        sample_entry,
        timescale: timescale(codec),
        video,
    })
}

fn dimensions(width: u32, height: u32) -> Option<(u16, u16)> {
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

fn visual((width, height): (u16, u16)) -> atom::Visual {
    atom::Visual {
        data_reference_index: 1,
        width,
        height,
        horizresolution: 72.into(),
        vertresolution: 72.into(),
        frame_count: 1,
        compressor: "".into(),
        depth: 24,
    }
}

fn audio(channels: u16, sample_rate: u32) -> atom::Audio {
    atom::Audio {
        data_reference_index: 1,
        channel_count: channels,
        sample_size: 16,
        // The field is 16.16: rates above 65535 Hz do not fit; 0 then.
        sample_rate: u16::try_from(sample_rate).unwrap_or(0).into(),
    }
}

/// Durations of one track: in its own timescale and in the movie's.
pub struct TrakTimes {
    /// Media duration (mdhd), track ticks.
    pub media: u64,
    /// Where the track's first presentation starts on the movie timeline
    /// (an empty edit), movie ticks.
    pub start: u64,
    /// The composition time of the first presented sample (the normal
    /// edit's media_time), track ticks; `None`: no edit list.
    pub media_time: Option<u64>,
}

/// The trak for `entry` around a sample table.
pub fn trak(track_id: u32, entry: &Entry, stbl: atom::Stbl, times: &TrakTimes) -> atom::Trak {
    let span = movie_ticks(times.media, entry.timescale);
    let edts = times.media_time.map(|media_time| {
        let mut entries = Vec::new();
        if times.start > 0 {
            entries.push(atom::ElstEntry {
                segment_duration: times.start,
                media_time: None,
                media_rate: 1.into(),
            });
        }
        entries.push(atom::ElstEntry {
            segment_duration: span,
            media_time: Some(media_time),
            media_rate: 1.into(),
        });
        atom::Edts {
            elst: Some(atom::Elst { entries }),
        }
    });
    let (handler, name) = match entry.video {
        Some(_) => (b"vide", "VideoHandler"),
        None => (b"soun", "SoundHandler"),
    };
    let (width, height) = entry.video.unwrap_or((0, 0));
    atom::Trak {
        tkhd: atom::Tkhd {
            track_id,
            duration: if times.media == 0 {
                0
            } else {
                times.start + span
            },
            alternate_group: u16::from(entry.video.is_none()),
            enabled: true,
            in_movie: true,
            volume: u8::from(entry.video.is_none()).into(),
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        edts,
        mdia: atom::Mdia {
            mdhd: atom::Mdhd {
                timescale: entry.timescale,
                duration: times.media,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: atom::Hdlr {
                handler: handler.into(),
                name: name.into(),
            },
            minf: atom::Minf {
                vmhd: entry.video.map(|_| atom::Vmhd::default()),
                smhd: entry.video.is_none().then(atom::Smhd::default),
                dinf: atom::Dinf {
                    dref: atom::Dref {
                        entries: vec![atom::Url::default().into()],
                    },
                },
                stbl,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// Track ticks in movie ticks, rounded up (a duration never shrinks to 0).
pub fn movie_ticks(ticks: u64, timescale: u32) -> u64 {
    let t = u128::from(ticks) * u128::from(MOVIE_TIMESCALE);
    u64::try_from(t.div_ceil(u128::from(timescale.max(1)))).unwrap_or(u64::MAX)
}

/// The mvhd of a movie of `duration` movie ticks and `tracks` tracks.
pub fn mvhd(duration: u64, tracks: usize) -> atom::Mvhd {
    atom::Mvhd {
        timescale: MOVIE_TIMESCALE,
        duration,
        rate: 1.into(),
        volume: 1.into(),
        next_track_id: u32::try_from(tracks + 1).unwrap_or(u32::MAX),
        ..Default::default()
    }
}

/// Sample flags (trun, trex): a sync sample depends on nothing; any other
/// depends on others and is not a sync sample.
pub fn sample_flags(keyframe: bool) -> u32 {
    if keyframe {
        0x0200_0000
    } else {
        0x0101_0000
    }
}
