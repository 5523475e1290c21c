//! Loading presentations from disk at [`crate::Store::open`], with crash
//! recovery and damage repair. The store tells the truth: what it holds is
//! what verifies on disk now, never what its metadata once said.
//!
//! - Every record of every segment is verified, sealed segments too; each
//!   recording run is cut at its first damage (see `segments`), and the
//!   spans and state are recomputed from what is kept: a title recorded
//!   `complete` stays complete only if the kept spans still hold it whole.
//! - Metadata that contradicts its SDP (no tracks, or not one track per
//!   media section) or its segments (a record of a track it does not list)
//!   refuses the whole presentation: it is never half-served.
//! - A directory with segments but no usable metadata is an orphan: it has
//!   no key, so nothing could ever play it.
//!
//! In [`Mode::Repair`] cuts are made on disk, refused presentations and
//! orphans are deleted (to be fetched anew) and a presentation whose
//! metadata still says `recording` becomes `partial`. Opened read-only
//! ([`Mode::ReadOnly`], e.g. to verify a store another process is writing)
//! nothing is changed: the same decisions are made in memory only, and an
//! unsealed segment of a presentation being recorded is taken with its
//! verified prefix, as a live segment.

mod segments;

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::presentation::{
    holds_whole, parse_segment_name, PresState, Presentation, META_FILE, PLAYED_FILE, SEGMENT_EXT,
};
use crate::store::OrphanInfo;
use crate::{fsutil, parse_metadata, CacheError, Metadata, PresentationState};

/// Whether loading may repair what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The store is ours (locked): recover, clean up.
    Repair,
    /// Another process may be writing: change nothing.
    ReadOnly,
}

/// What a directory in the store turned out to be.
pub enum Loaded {
    Presentation(Box<Presentation>),
    /// Nothing (any more): an interrupted creation, or a directory deleted
    /// in repair mode.
    Nothing,
    /// A directory kept on disk that is not a presentation: an orphan or a
    /// refused presentation (read-only), or metadata of another version.
    NotPresentation(OrphanInfo),
}

/// Loads the presentation in `dir`. Problems found (cuts, skipped segments,
/// refused metadata, orphans) go to `problems`; an error means the
/// directory could not be read.
pub fn load_presentation(
    dir: &Path,
    mode: Mode,
    corrupt: &Arc<AtomicU64>,
    problems: &mut Vec<CacheError>,
) -> Result<Loaded, CacheError> {
    let meta_path = dir.join(META_FILE);
    let files = list_files(dir, mode, problems)?;
    let meta = match fs::read(&meta_path) {
        Ok(bytes) => parse_metadata(&meta_path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if files.segments.is_empty() {
                // Metadata is written before any segment: this is a
                // presentation whose creation was interrupted (or,
                // read-only, is under way).
                if mode == Mode::Repair {
                    fs::remove_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
                }
                return Ok(Loaded::Nothing);
            }
            Err(CacheError::corrupt(&meta_path, 0, "no metadata file"))
        }
        Err(e) => return Err(CacheError::io(&meta_path, e)),
    };
    let orphan = |reason: String| OrphanInfo {
        id: id_of(dir),
        path: dir.to_path_buf(),
        bytes: files.bytes,
        segments: files.segments.len(),
        reason,
    };
    let mut meta = match meta {
        Ok(meta) => meta,
        Err(e @ CacheError::UnsupportedVersion { .. }) => {
            // Another version's: not ours to judge or delete.
            let info = orphan(e.to_string());
            problems.push(e);
            return Ok(Loaded::NotPresentation(info));
        }
        Err(e) => {
            let reclaimed = mode == Mode::Repair;
            let info = orphan(e.to_string());
            problems.push(CacheError::Orphan {
                path: dir.to_path_buf(),
                segments: info.segments,
                bytes: info.bytes,
                reason: e.to_string(),
                reclaimed,
            });
            if reclaimed {
                fsutil::trash_and_remove(dir);
                return Ok(Loaded::Nothing);
            }
            return Ok(Loaded::NotPresentation(info));
        }
    };
    let refuse = |what: String, problems: &mut Vec<CacheError>| {
        let removed = mode == Mode::Repair;
        problems.push(CacheError::Refused {
            path: meta_path.clone(),
            what: what.clone(),
            removed,
        });
        if removed {
            fsutil::trash_and_remove(dir);
            Loaded::Nothing
        } else {
            Loaded::NotPresentation(orphan(what))
        }
    };
    if let Some(what) = contradiction(&meta) {
        return Ok(refuse(what, problems));
    }
    let found: Vec<_> = files
        .segments
        .iter()
        .filter_map(|(name, path)| segments::inspect(path, parse_segment_name(name), mode))
        .collect();
    let tracks = meta.tracks.len();
    if let Some(f) = found.iter().find(|f| {
        f.outcome.as_ref().is_ok_and(|i| {
            i.scan.prefix.record_count > 0 && usize::from(i.scan.prefix.max_track) >= tracks
        })
    }) {
        let what = format!(
            "{} holds records of a track the metadata does not list (it lists {tracks})",
            f.path.display()
        );
        return Ok(refuse(what, problems));
    }
    let max_run = found.iter().map(|f| f.run).max().unwrap_or(0);
    let maybe_live = meta.state == PresentationState::Recording;
    let before = problems.len();
    let kept = segments::settle(dir, found, mode, maybe_live, problems);
    corrupt.fetch_add(
        problems[before..]
            .iter()
            .filter(|p| matches!(p, CacheError::Damaged { .. }))
            .count() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut state = PresState {
        meta: meta.clone(),
        runs: Vec::new(),
        max_run,
        cut: None,
    };
    for segment in kept {
        state.add_segment(segment);
    }
    // A writer that was still open died with the process.
    if meta.state == PresentationState::Recording && mode == Mode::Repair {
        meta.state = PresentationState::Partial;
    }
    meta.spans = state.spans();
    if meta.state == PresentationState::Complete && !holds_whole(meta.range, &meta.spans) {
        meta.state = PresentationState::Partial;
    }
    let last_played = fs::metadata(dir.join(PLAYED_FILE))
        .or_else(|_| fs::metadata(&meta_path))
        .and_then(|m| m.modified())
        .map_or(0, fsutil::unix_ns);
    // Bytes as they are now that cuts and removals are done.
    let bytes = match mode {
        Mode::Repair => dir_bytes(dir),
        Mode::ReadOnly => files.bytes,
    };
    let saved = state.meta.clone();
    state.meta = meta.clone();
    let presentation = Presentation::new(
        meta.key.clone(),
        dir.to_path_buf(),
        state,
        bytes,
        last_played,
        corrupt.clone(),
    );
    if meta != saved && mode == Mode::Repair {
        if let Err(e) = presentation.save_meta(&meta) {
            problems.push(e);
        }
    }
    Ok(Loaded::Presentation(Box::new(presentation)))
}

/// Why metadata contradicts its own SDP, if it does.
fn contradiction(meta: &Metadata) -> Option<String> {
    if meta.tracks.is_empty() {
        return Some("the metadata lists no tracks".into());
    }
    let media = meta.sdp.lines().filter(|l| l.starts_with("m=")).count();
    (media != meta.tracks.len()).then(|| {
        format!(
            "the metadata lists {} tracks but its SDP has {media} media sections",
            meta.tracks.len()
        )
    })
}

/// A directory's name: the presentation's id.
pub fn id_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Files {
    /// Segment files: name and path.
    segments: Vec<(String, std::path::PathBuf)>,
    /// Bytes of all files.
    bytes: u64,
}

/// The directory's segment files and size; `*.tmp` files are deleted in
/// repair mode (interrupted metadata replacements or segment creations).
fn list_files(dir: &Path, mode: Mode, problems: &mut Vec<CacheError>) -> Result<Files, CacheError> {
    let mut files = Files {
        segments: Vec::new(),
        bytes: 0,
    };
    for entry in fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))? {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") && mode == Mode::Repair {
            if let Err(e) = fs::remove_file(&path) {
                problems.push(CacheError::io(&path, e));
            }
            continue;
        }
        if path.extension().is_some_and(|x| x == SEGMENT_EXT) {
            files.segments.push((name, path.clone()));
        }
        files.bytes += fs::metadata(&path).map_or(0, |m| m.len());
    }
    Ok(files)
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
