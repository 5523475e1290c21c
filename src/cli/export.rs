//! `streamcache cache export KEY|ID OUT [--from NPT] [--to NPT] [--format
//! mp4|ts]`: a cached title as a file, without re-encoding.
//!
//! Two passes over the stored records, both depacketizing in play order:
//! the first learns the codecs and every frame's header (what the MP4's
//! moov, written first, needs), the second writes. Memory is the sample
//! table, never the media.

use std::io::{BufWriter, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

use streamcache_cache::{Metadata, Reader, RecordKind};
use streamcache_transcoding::mux::mp4::Mp4Plan;
use streamcache_transcoding::mux::ts::TsMuxer;
use streamcache_transcoding::mux::FrameHeader;
use streamcache_transcoding::title::Frames;
use streamcache_transcoding::{Codec, Frame, TrackSpec};
use streamcache_types::{Npt, NptSpan, HELD_SLACK};

use crate::config::Config;
use crate::daemon::open_store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// MP4 with the moov first (plays while downloading).
    Mp4,
    /// MPEG-TS.
    Ts,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The title: its key or its id (as `cache ls` shows).
    pub key: String,
    /// The file to write. It is written under a temporary name in the same
    /// directory (`.NAME.PID.tmp`) and renamed to OUT only once complete:
    /// a failed export leaves no partial file, and an existing OUT stays as
    /// it was until then (a killed export may leave the temporary file).
    pub out: PathBuf,
    /// Start at the keyframe at or before this npt (seconds or h:m:s).
    #[arg(long)]
    pub from: Option<String>,
    /// End at this npt.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, value_enum, default_value = "mp4")]
    pub format: Format,
}

pub fn run(config: &Config, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let npt = |s: &Option<String>, what: &str| -> anyhow::Result<Option<Npt>> {
        s.as_deref()
            .map(|s| Npt::parse(s).with_context(|| format!("--{what} {s:?} is not an npt")))
            .transpose()
    };
    let (from, to) = (npt(&args.from, "from")?, npt(&args.to, "to")?);
    let store = open_store(config, true)?;
    let key = store.resolve(&args.key).with_context(|| {
        format!(
            "cannot export {}: no title with that key or id in the cache",
            args.key
        )
    })?;
    let reader = store
        .open_reader(&key)?
        .with_context(|| format!("cannot export {key}: no longer in the cache"))?;
    let meta = reader.metadata().clone();
    let want = wanted(&meta, from, to);
    check_held(&meta.spans, want).with_context(|| format!("cannot export {key}"))?;
    let specs = track_specs(&meta).with_context(|| format!("cannot export {key}"))?;
    let cut = Cut { from, to: want.end };

    // Pass 1: codecs and frame headers.
    let bar = progress(want, "reading");
    let mut headers = Vec::new();
    let codecs = pass(&reader, &specs, &cut, &bar, |f| {
        headers.push(FrameHeader::from(f))
    })?;
    bar.finish_and_clear();
    let (codecs, index) = known(codecs, &specs)?;
    if headers.is_empty() {
        anyhow::bail!("cannot export {key}: no frames in the span asked for");
    }
    headers
        .iter_mut()
        .for_each(|h| h.track = index[h.track].unwrap_or(h.track));

    // Pass 2: write, under a temporary name until complete.
    let (staged, file) = Staged::create(&args.out)?;
    let mut out = BufWriter::new(file);
    let bar = progress(want, "writing");
    let renumber = |f: &Frame| index[f.track].map(|track| Frame { track, ..f.clone() });
    match args.format {
        Format::Mp4 => {
            let plan = Mp4Plan::new(&codecs, headers).context("cannot mux")?;
            let mut writer = plan.writer(out)?;
            let mut failed = None;
            pass(&reader, &specs, &cut, &bar, |f| {
                if let (Some(f), None) = (renumber(f), &failed) {
                    failed = writer.write_frame(&f).err();
                }
            })?;
            if let Some(e) = failed {
                return Err(e).context("the title changed between the two passes");
            }
            out = writer.finish()?;
        }
        Format::Ts => {
            let mut mux = TsMuxer::new(&codecs).context("cannot mux")?;
            let mut buf = Vec::new();
            let mut failed: Option<anyhow::Error> = None;
            pass(&reader, &specs, &cut, &bar, |f| {
                if let (Some(f), None) = (renumber(f), &failed) {
                    let r = mux.push(f, &mut buf);
                    failed = r
                        .err()
                        .map(Into::into)
                        .or_else(|| out.write_all(&buf).err().map(Into::into));
                    buf.clear();
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            mux.finish(&mut buf)?;
            out.write_all(&buf)?;
        }
    }
    // Flushed here, not on drop (which would swallow a write error).
    out.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", staged.tmp.display()))?;
    staged.commit()?;
    bar.finish_and_clear();
    println!("exported {key} to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// OUT while it is being written: `.NAME.PID.tmp` beside it (the same
/// file system, so the rename is atomic), removed on drop unless committed.
/// Not synced to disk before the rename: like `cp`, the export leaves that
/// to the file system.
struct Staged {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staged {
    fn create(out: &Path) -> anyhow::Result<(Staged, std::fs::File)> {
        let name = out
            .file_name()
            .with_context(|| format!("cannot write {}: it names no file", out.display()))?;
        let dir = match out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let staged = Staged {
            tmp,
            out: out.to_owned(),
            committed: false,
        };
        Ok((staged, file))
    }

    /// Renames the complete file to OUT.
    fn commit(mut self) -> anyhow::Result<()> {
        std::fs::rename(&self.tmp, &self.out).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.out.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Where the export starts and ends: the options, else the title's range,
/// else what is held.
pub(crate) fn wanted(meta: &Metadata, from: Option<Npt>, to: Option<Npt>) -> NptSpan {
    let held_end = meta.spans.iter().map(|s| s.end).max().unwrap_or(Npt::ZERO);
    NptSpan {
        start: from.or(meta.range.map(|r| r.start)).unwrap_or(Npt::ZERO),
        end: to.or(meta.range.and_then(|r| r.end)).unwrap_or(held_end),
    }
}

/// One held span must cover what is asked for.
pub(crate) fn check_held(spans: &[NptSpan], want: NptSpan) -> anyhow::Result<()> {
    let covers = |s: &NptSpan| {
        s.start <= want.start.saturating_add(HELD_SLACK)
            && s.end.saturating_add(HELD_SLACK) >= want.end
    };
    if spans.iter().any(covers) {
        return Ok(());
    }
    let held: Vec<String> = spans
        .iter()
        .map(|s| format!("{:.1}–{:.1} s", s.start.as_secs_f64(), s.end.as_secs_f64()))
        .collect();
    anyhow::bail!(
        "the cache holds {} of it, not all of {:.1}–{:.1} s",
        if held.is_empty() {
            "nothing".to_owned()
        } else {
            held.join(", ")
        },
        want.start.as_secs_f64(),
        want.end.as_secs_f64()
    )
}

/// Each stored track's spec: track `i` is the SDP's section `i`, as the
/// origin client numbered them when it recorded.
pub(crate) fn track_specs(meta: &Metadata) -> anyhow::Result<Vec<TrackSpec>> {
    let specs = TrackSpec::from_sdp(&meta.sdp).context("its stored SDP gives no tracks")?;
    if specs.len() != meta.tracks.len() {
        anyhow::bail!(
            "its SDP describes {} tracks, the store holds {}",
            specs.len(),
            meta.tracks.len()
        );
    }
    Ok(specs)
}

/// Where a pass starts (the keyframe at or before `from`) and ends.
pub(crate) struct Cut {
    pub from: Option<Npt>,
    pub to: Npt,
}

/// Depacketizes the title in play order from the cut's start to its end,
/// handing each frame to `sink`; gives back the codecs learnt.
pub(crate) fn pass(
    reader: &Reader,
    specs: &[TrackSpec],
    cut: &Cut,
    bar: &ProgressBar,
    mut sink: impl FnMut(&Frame),
) -> anyhow::Result<Vec<Option<Codec>>> {
    let mut frames = Frames::new(specs).map_err(|u| {
        anyhow::anyhow!(
            "track {}'s codec {} cannot be exported",
            u.track,
            u.encoding
        )
    })?;
    let mut cursor = reader.cursor();
    if let Some(from) = cut.from {
        cursor.seek(from)?;
    }
    let mut drain = |frames: &mut Frames| {
        while let Some(frame) = frames.pop() {
            if frame.pts < cut.to {
                sink(&frame);
            }
        }
    };
    // Past `to` by this much, no frame can still end before it (B-frame
    // reordering, an access unit's last packet).
    let stop = cut.to.saturating_add(Npt::from_secs(1));
    while let Some(record) = cursor.next() {
        let record = record?;
        if record.media_time > stop {
            break;
        }
        if record.kind == RecordKind::Rtp {
            bar.set_position(record.media_time.as_ns() / 1_000_000);
            frames.push(
                usize::from(record.track),
                record.payload,
                record.media_time,
                record.flags.discontinuity,
            );
            drain(&mut frames);
        }
    }
    frames.finish();
    drain(&mut frames);
    Ok(frames.codecs())
}

/// The codecs of the tracks that have one, and each track's new index.
pub(crate) fn known(
    codecs: Vec<Option<Codec>>,
    specs: &[TrackSpec],
) -> anyhow::Result<(Vec<Codec>, Vec<Option<usize>>)> {
    let mut kept = Vec::new();
    let mut index = Vec::new();
    for codec in codecs {
        index.push(codec.as_ref().map(|_| kept.len()));
        kept.extend(codec);
    }
    if kept.is_empty() {
        let names: Vec<&str> = specs.iter().map(|s| s.encoding.as_str()).collect();
        anyhow::bail!("no track's codec could be learnt ({})", names.join(", "));
    }
    Ok((kept, index))
}

/// A bar over the span in milliseconds of npt, only when both stdout and
/// stderr are a terminal.
fn progress(want: NptSpan, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(want.end.as_ns() / 1_000_000);
    bar.set_style(
        ProgressStyle::with_template("{msg:8} [{bar:40}] {pos}/{len} ms npt")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcache_cache::TrackMeta;

    fn span(start: u64, end: u64) -> NptSpan {
        NptSpan {
            start: Npt::from_secs(start),
            end: Npt::from_secs(end),
        }
    }

    #[test]
    fn out_appears_only_when_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("title.mp4");
        let listing = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .expect("read dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };

        // A failure (the staged file dropped): nothing left, an existing
        // OUT untouched.
        std::fs::write(&out, b"old").expect("old OUT");
        let (staged, mut file) = Staged::create(&out).expect("create");
        file.write_all(b"partial").expect("write");
        assert_eq!(
            listing(),
            [
                format!(".title.mp4.{}.tmp", std::process::id()),
                "title.mp4".into()
            ]
        );
        drop((staged, file));
        assert_eq!(listing(), ["title.mp4"]);
        assert_eq!(std::fs::read(&out).expect("OUT"), b"old");

        // Success: renamed into place.
        let (staged, mut file) = Staged::create(&out).expect("create");
        file.write_all(b"new").expect("write");
        drop(file);
        staged.commit().expect("commit");
        assert_eq!(listing(), ["title.mp4"]);
        assert_eq!(std::fs::read(&out).expect("OUT"), b"new");

        // A path that names no file is refused before anything is written.
        assert!(Staged::create(Path::new("/")).is_err());
    }

    #[test]
    fn a_partial_span_is_refused_naming_what_is_held() {
        let held = [span(0, 12), span(20, 30)];
        assert!(check_held(&held, span(2, 5)).is_ok());
        assert!(check_held(&held, span(21, 30)).is_ok());
        let err = check_held(&held, span(0, 30)).expect_err("partial");
        assert_eq!(
            err.to_string(),
            "the cache holds 0.0–12.0 s, 20.0–30.0 s of it, not all of 0.0–30.0 s"
        );
        let err = check_held(&[], span(0, 1)).expect_err("nothing");
        assert!(err.to_string().starts_with("the cache holds nothing"));
    }

    #[test]
    fn track_specs_come_from_the_sdp_in_order() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nt=0 0\r\n\
            m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
            a=fmtp:96 packetization-mode=1\r\na=control:stream=0\r\n\
            m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
            a=fmtp:97 config=1210\r\na=control:stream=1\r\n";
        let mut meta = Metadata {
            sdp: sdp.to_owned(),
            tracks: vec![TrackMeta::default(), TrackMeta::default()],
            ..Default::default()
        };
        let specs = track_specs(&meta).expect("specs");
        assert_eq!(specs[0].encoding, "H264");
        assert_eq!(specs[1].channels, Some(2));
        assert_eq!(specs[1].fmtp.as_deref(), Some("config=1210"));
        meta.tracks.pop();
        let err = track_specs(&meta).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "its SDP describes 2 tracks, the store holds 1"
        );
    }
}
