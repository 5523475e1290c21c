//! Loading presentations from disk at [`crate::Store::open`], with crash
//! recovery.
//!
//! A segment whose file ends in a valid trailer is taken as it is (its records
//! are checked when read or verified). Any other segment was being written
//! when the process died: its records are scanned, the verified prefix is
//! kept, whatever follows is cut, and the segment is sealed with the
//! `RECOVERED` trailer flag. A presentation whose metadata still says
//! `recording` becomes `partial`.
//!
//! Opened read-only ([`Mode::ReadOnly`], e.g. to verify a store another
//! process is writing) nothing is changed: an unsealed segment is taken with
//! its verified prefix, as a live segment.

use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use tracing::debug;

use crate::format::{self, Inspected, ScanStop, Trailer};
use crate::presentation::{
    run_of_name, PresState, Presentation, META_FILE, PLAYED_FILE, SEGMENT_EXT,
};
use crate::segment::{Segment, SegmentInit};
use crate::{fsutil, parse_metadata, CacheError, PresentationState};

/// Whether loading may repair what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The store is ours (locked): recover, clean up.
    Repair,
    /// Another process may be writing: change nothing.
    ReadOnly,
}

/// Loads the presentation in `dir`. Problems that do not prevent it from
/// being used (a cut or skipped segment) go to `problems`; an error means the
/// whole directory is skipped. `None` for the remains of a presentation whose
/// creation was interrupted (removed in repair mode).
pub fn load_presentation(
    dir: &Path,
    mode: Mode,
    problems: &mut Vec<CacheError>,
) -> Result<Option<Presentation>, CacheError> {
    let meta_path = dir.join(META_FILE);
    let meta_bytes = match fs::read(&meta_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !has_segments(dir)? => {
            // Metadata is written before any segment: this is a presentation
            // whose creation was interrupted (or, read-only, is under way).
            if mode == Mode::Repair {
                fs::remove_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
            }
            return Ok(None);
        }
        Err(e) => return Err(CacheError::io(&meta_path, e)),
    };
    let mut meta = parse_metadata(&meta_path, &meta_bytes)?;
    let mut state = PresState {
        meta: meta.clone(),
        runs: Vec::new(),
        max_run: 0,
    };
    let mut bytes = 0;
    let entries = fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") && mode == Mode::Repair {
            // An interrupted metadata replacement or segment creation.
            if let Err(e) = fs::remove_file(&path) {
                problems.push(CacheError::io(&path, e));
            }
            continue;
        }
        if path.extension().is_some_and(|x| x == SEGMENT_EXT) {
            state.max_run = state.max_run.max(run_of_name(&name).unwrap_or(0));
            match load_segment(&path, mode, problems) {
                Ok(Some(segment)) => state.add_segment(segment),
                Ok(None) => {}
                Err(e) => problems.push(e),
            }
        }
        bytes += fs::metadata(&path).map_or(0, |m| m.len());
    }
    let last_played = fs::metadata(dir.join(PLAYED_FILE))
        .or_else(|_| fs::metadata(&meta_path))
        .and_then(|m| m.modified())
        .map_or(0, fsutil::unix_ns);
    // A writer that was still open died with the process.
    if meta.state == PresentationState::Recording && mode == Mode::Repair {
        meta.state = PresentationState::Partial;
    }
    meta.spans = state.spans();
    let presentation = Presentation::new(
        meta.key.clone(),
        dir.to_path_buf(),
        state,
        bytes,
        last_played,
    );
    if meta != presentation.lock().meta && mode == Mode::Repair {
        match presentation.save_meta(&meta) {
            Ok(()) => presentation.lock().meta = meta,
            Err(e) => problems.push(e),
        }
    }
    Ok(Some(presentation))
}

fn has_segments(dir: &Path) -> Result<bool, CacheError> {
    for entry in fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))? {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        if entry.path().extension().is_some_and(|x| x == SEGMENT_EXT) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Loads one segment file, recovering it if it was not sealed (in
/// [`Mode::Repair`]). `None` if it holds no record.
fn load_segment(
    path: &Path,
    mode: Mode,
    problems: &mut Vec<CacheError>,
) -> Result<Option<Arc<Segment>>, CacheError> {
    let file = OpenOptions::new()
        .read(true)
        .write(mode == Mode::Repair)
        .open(path)
        .map_err(|e| CacheError::io(path, e))?;
    let len = file.metadata().map_err(|e| CacheError::io(path, e))?.len();
    if len < format::HEADER_LEN as u64 {
        return Err(CacheError::corrupt(
            path,
            len,
            "file ends inside the 64-byte segment header",
        ));
    }
    let (header, inspected) = match mode {
        Mode::Repair => {
            // SAFETY: in repair mode the store holds the directory lock, so
            // nothing else writes or trims the file.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| CacheError::io(path, e))?;
            format::inspect_segment(path, &map)?
        }
        Mode::ReadOnly => {
            // The daemon may seal this segment meanwhile, trimming the file
            // to its used length: a mapping of the preallocated size would
            // then fault (SIGBUS) past the new end. A read can only come up
            // short, which the scan treats like a torn tail.
            let mut bytes = Vec::new();
            (&file)
                .read_to_end(&mut bytes)
                .map_err(|e| CacheError::io(path, e))?;
            format::inspect_segment(path, &bytes)?
        }
    };
    let (summary, sealed) = match inspected {
        Inspected::Sealed(trailer) => (trailer, true),
        Inspected::Unsealed(scan) => {
            if scan.record_count == 0 {
                if mode == Mode::Repair {
                    // Created, never written: nothing to keep.
                    fs::remove_file(path).map_err(|e| CacheError::io(path, e))?;
                }
                return Ok(None);
            }
            let mut flags = format::TRAILER_FINAL | format::TRAILER_RECOVERED;
            match &scan.stop {
                // Sealed, but not trimmed to the trailer: keep its flags.
                ScanStop::Trailer(t) => flags = t.flags,
                // Read-only, a torn tail may be a record another process is
                // writing right now: not a problem to report.
                ScanStop::Bad(what) if mode == Mode::Repair => {
                    debug!(path = %path.display(), offset = scan.records_end, what, "cutting segment");
                    problems.push(CacheError::Recovered {
                        path: path.to_path_buf(),
                        offset: scan.records_end,
                        kept_records: scan.record_count,
                    });
                }
                ScanStop::Bad(_) | ScanStop::End | ScanStop::Zeroed => {}
            }
            let trailer = Trailer {
                records_end: scan.records_end,
                record_count: scan.record_count,
                min_ns: scan.min_ns,
                max_ns: scan.max_ns,
                flags,
                index: scan.index,
            };
            if mode == Mode::Repair {
                seal(&file, path, &trailer)?;
            }
            (trailer, mode == Mode::Repair)
        }
    };
    Ok(Some(Segment::new(SegmentInit {
        path: path.to_path_buf(),
        header,
        committed: summary.records_end,
        sealed,
        records: summary.record_count,
        min_ns: summary.min_ns,
        max_ns: summary.max_ns,
        index: summary.index,
    })))
}

/// Writes `trailer` after the kept records and cuts the file after it.
fn seal(file: &File, path: &Path, trailer: &Trailer) -> Result<(), CacheError> {
    let bytes = trailer.to_bytes();
    let io = |e| CacheError::io(path, e);
    file.write_all_at(&bytes, trailer.records_end).map_err(io)?;
    file.set_len(trailer.records_end + bytes.len() as u64)
        .map_err(io)?;
    file.sync_data().map_err(io)
}
