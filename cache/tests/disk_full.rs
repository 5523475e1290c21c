//! Disk full while writing: the writer stops with `DiskFull`, and everything
//! written so far stays readable, also after a restart.
//!
//! Space runs out in a child process (this test binary run again with
//! `STREAMCACHE_DISK_FULL_CHILD` set) by lowering its file size limit below
//! the segment size, so the next segment's space reservation fails the way
//! it does on a full disk. The limit is per process, hence the child.

mod common;

use std::process::Command;

use common::*;
use streamcache_cache::{CacheError, PresentationState, Store};

const CHILD_ENV: &str = "STREAMCACHE_DISK_FULL_CHILD";

#[test]
fn disk_full_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = std::path::Path::new(&root);
    let store = open(root, config(1 << 30));
    let mut writer = store.open_writer("k", meta("k")).unwrap();
    for i in 0..150 {
        writer.append(&rec(1, i, 0, 1200).input()).unwrap();
    }
    // From here on no file may grow to a segment's size. Exceeding the limit
    // raises SIGXFSZ, which would kill the process; ignored, it is EFBIG.
    let limit = libc::rlimit {
        rlim_cur: SEGMENT - 1,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut appended = 150;
    let err = loop {
        match writer.append(&rec(1, appended, 0, 1200).input()) {
            Ok(()) => appended += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, CacheError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(matches!(
        writer.append(&rec(1, appended, 0, 1200).input()),
        Err(CacheError::WriterStopped { .. })
    ));
    writer.finish(PresentationState::Partial).unwrap();

    let expected: Vec<_> = (0..appended).map(|i| rec(1, i, 0, 1200)).collect();
    let read = |store: &Store| {
        let reader = store.open_reader("k").unwrap().unwrap();
        let mut cursor = reader.cursor();
        let mut got = Vec::new();
        while let Some(r) = cursor.next() {
            got.push(Rec::of(&r.unwrap()));
        }
        assert!(cursor.is_complete());
        got
    };
    assert_eq!(read(&store), expected);
    assert!(store.verify(None).iter().all(|r| r.is_ok()));
    assert_eq!(
        store.metadata("k").unwrap().unwrap().state,
        PresentationState::Partial
    );
    drop(store);
    let store = open(root, config(1 << 30));
    assert_eq!(read(&store), expected);
    println!("disk-full-child-ok appended={appended}");
}

#[test]
fn disk_full_stops_the_writer_and_keeps_the_data() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "disk_full_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("disk-full-child-ok"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
