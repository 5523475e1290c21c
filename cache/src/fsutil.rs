//! Small file-system helpers: space reservation, the store lock, atomic
//! replacement, directory sync.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Reserves `len` bytes of disk blocks for `file` (and sets its length).
///
/// Segments are written through a shared mapping, and a write fault on a page
/// the file system cannot back is a SIGBUS, not an error. Reserving the blocks
/// first turns "disk full" into this function's error.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain syscall on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    // posix_fallocate returns the error number instead of setting errno.
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Whether an error from [`reserve`] means there is no space to be had.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    )
}

/// Space on the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still allocate.
    pub available: u64,
    /// The file system's size.
    pub total: u64,
}

/// `statvfs(2)` of the file system holding `path`.
pub fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `statvfs` is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a pointer to a local struct.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types are narrower on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (frsize, bavail, blocks) = (
        u64::from(st.f_frsize).max(1),
        u64::from(st.f_bavail),
        u64::from(st.f_blocks),
    );
    Ok(DiskSpace {
        available: bavail.saturating_mul(frsize),
        total: blocks.saturating_mul(frsize),
    })
}

/// Takes an exclusive advisory lock on `file`, failing at once if another
/// open file description holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: a plain syscall on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` atomically: write a temporary file, sync
/// it, rename it over the old one, sync the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Sets a file's modification time to now, creating it if needed (no sync:
/// a lost update only makes eviction order slightly stale).
pub fn touch(path: &Path, at: SystemTime) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?
        .set_modified(at)
}

/// Name prefix of a directory being deleted (removed at the next open).
pub const TRASH_PREFIX: &str = ".trash-";

/// Deletes the directory `dir`: first renamed away beside it, so a crash
/// halfway leaves no half-deleted presentation.
pub fn trash_and_remove(dir: &Path) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trash = dir.with_file_name(format!("{TRASH_PREFIX}{name}-{}", now_ns()));
    match std::fs::rename(dir, &trash) {
        Ok(()) => remove_tree(&trash),
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot move away; deleting in place");
            remove_tree(dir);
        }
    }
}

pub fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete");
    }
}

pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub fn now_ns() -> u64 {
    unix_ns(SystemTime::now())
}
