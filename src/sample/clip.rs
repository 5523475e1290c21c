//! The sample title, embedded in the binary in the store's own format
//! (`assets/sample/`, made as its README says), and opened as a read-only
//! store in a directory of its own.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use streamcache_cache::{Metadata, Reader, Store, StoreConfig};
use streamcache_types::Npt;

const META: &[u8] = include_bytes!("../../assets/sample/meta.json");
const SEGMENT: &[u8] = include_bytes!("../../assets/sample/r00000001-s000000.seg");
const SEGMENT_NAME: &str = "r00000001-s000000.seg";
/// The clip's presentation key in its store.
const KEY: &str = "streamcache:sample";

/// The sample title, ready to be read by any number of players.
pub struct Clip {
    store: Store,
    metadata: Metadata,
    /// The title's length: where a live loop starts over.
    pub duration: Npt,
    /// Deleted with the clip.
    dir: PathBuf,
}

impl Clip {
    /// Writes the embedded files into a fresh directory under the system's
    /// temporary directory and opens them as a store (read-only: nothing is
    /// ever written there).
    pub fn open() -> anyhow::Result<Clip> {
        let dir = std::env::temp_dir().join(format!(
            "streamcache-sample-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let title = dir.join("sample");
        std::fs::create_dir_all(&title)
            .with_context(|| format!("cannot create {}", title.display()))?;
        let opened = write_files(&title).and_then(|()| open_store(&dir));
        match opened {
            Ok((store, metadata)) => {
                let duration = metadata
                    .range
                    .and_then(|r| r.end)
                    .context("the sample clip has no end")?;
                Ok(Clip {
                    store,
                    metadata,
                    duration,
                    dir,
                })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// A reader from the clip's start.
    pub fn reader(&self) -> anyhow::Result<Reader> {
        self.store
            .open_reader(KEY)?
            .context("the sample clip is not in its store")
    }

    /// Per track: (index, RTP clock rate).
    pub fn tracks(&self) -> Vec<(usize, u32)> {
        self.metadata
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.clock_rate))
            .collect()
    }

    /// The SDP: with the title's range on demand, `npt=now-` live.
    pub fn sdp(&self, live: bool) -> String {
        if !live {
            return self.metadata.sdp.clone();
        }
        self.metadata
            .sdp
            .split_inclusive("\r\n")
            .map(|line| {
                if line.starts_with("a=range:") {
                    "a=range:npt=now-\r\n"
                } else {
                    line
                }
            })
            .collect()
    }
}

impl Drop for Clip {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_files(title: &Path) -> anyhow::Result<()> {
    for (name, bytes) in [("meta.json", META), (SEGMENT_NAME, SEGMENT)] {
        let path = title.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn open_store(root: &Path) -> anyhow::Result<(Store, Metadata)> {
    let config = StoreConfig {
        budget_bytes: u64::MAX,
        segment_max_bytes: 64 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, problems) = Store::open_read_only(root, config)
        .with_context(|| format!("cannot open the sample clip in {}", root.display()))?;
    if let Some(problem) = problems.first() {
        anyhow::bail!("the sample clip is damaged: {problem}");
    }
    let metadata = store
        .metadata(KEY)?
        .context("the sample clip has no metadata")?;
    Ok((store, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_clip_opens_and_reads_whole() {
        let clip = Clip::open().expect("the clip opens");
        assert_eq!(clip.tracks(), [(0, 90_000), (1, 48_000)]);
        assert!(clip.duration > Npt::from_secs(9), "{}", clip.duration);
        let reader = clip.reader().expect("reader");
        let mut cursor = reader.cursor();
        let mut records = 0;
        while let Some(record) = cursor.next() {
            record.expect("every record verifies");
            records += 1;
        }
        assert!(records > 500, "{records} records");
        assert!(clip.sdp(false).contains("a=range:npt=0-10.021\r\n"));
        let live = clip.sdp(true);
        assert!(live.contains("a=range:npt=now-\r\n") && !live.contains("10.021"));
        let dir = clip.dir.clone();
        drop(clip);
        assert!(!dir.exists(), "the clip's directory is removed");
    }
}
