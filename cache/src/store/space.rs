//! The store's disk space: how much its files use, room for a new segment,
//! and eviction (least recently played first, never a presentation being
//! played) to stay under the budget and keep the file system from filling.

use super::*;

impl Inner {
    pub(super) fn entries(&self) -> MutexGuard<'_, HashMap<String, Arc<Presentation>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn writable(&self) -> Result<(), CacheError> {
        match self.mode {
            Mode::Repair => Ok(()),
            Mode::ReadOnly => Err(CacheError::ReadOnly {
                path: self.root.clone(),
            }),
        }
    }

    pub(super) fn used_bytes(&self, entries: &HashMap<String, Arc<Presentation>>) -> u64 {
        entries
            .values()
            .map(|p| p.bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Largest payload a writer can append with this configuration.
    pub fn max_payload(&self) -> usize {
        let room = self.cfg.segment_max_bytes as usize
            - format::HEADER_LEN
            - format::RECORD_HEADER_LEN
            - Trailer::encoded_len(1);
        room.min(format::MAX_PAYLOAD)
    }

    /// The size of `key`'s next segment, whose first record needs `floor`
    /// bytes: as large as the configured segment size, the disk budget and
    /// the file system's free space allow ([`segment_bytes`]). Evicts for
    /// the budget first, then, while even `floor` does not fit on the disk,
    /// least recently played unpinned presentations.
    pub fn segment_room(&self, floor: u64, key: &str) -> Result<u64, CacheError> {
        let want = self.cfg.segment_max_bytes;
        // The smallest segment, as the errors report it.
        let least = floor.max(MIN_SEGMENT_BYTES).min(want);
        self.evict(want);
        loop {
            let headroom = self
                .cfg
                .budget_bytes
                .saturating_sub(self.used_bytes(&self.entries()));
            let available = self.available_bytes();
            match segment_bytes(want, available, headroom, floor) {
                Ok(bytes) => return Ok(bytes),
                Err(Shortage::Budget) => {
                    return Err(CacheError::OverBudget {
                        key: key.to_string(),
                        bytes: least,
                        budget: self.cfg.budget_bytes,
                    })
                }
                Err(Shortage::Disk) => {
                    if self.evict_for_disk(floor).is_empty() {
                        return Err(CacheError::DiskFull {
                            path: self.root.clone(),
                            bytes: least,
                            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                        });
                    }
                }
            }
        }
    }

    /// Bytes the store's file system has free; unknown (a `statvfs`
    /// failure) is unlimited, and the space reservation has the last word.
    pub(super) fn available_bytes(&self) -> u64 {
        fsutil::disk_space(&self.root).map_or(u64::MAX, |s| s.available)
    }

    /// Evicts least recently played unpinned presentations until `bytes`
    /// more (and the [`DISK_RESERVE`]) are free on the file system, at least
    /// one if it looked free already (a reservation found it was not).
    pub fn evict_for_disk(&self, bytes: u64) -> Vec<String> {
        let short = (bytes + DISK_RESERVE)
            .saturating_sub(self.available_bytes())
            .max(1);
        self.evict_while(|_, freed| freed < short)
    }

    /// Evicts until `extra` more bytes fit the budget, or nothing evictable
    /// is left.
    pub(super) fn evict(&self, extra: u64) -> Vec<String> {
        let budget = self.cfg.budget_bytes;
        self.evict_while(|used, _| used + extra > budget)
    }

    /// Evicts least recently played unpinned presentations while `more(used,
    /// freed)` says so (bytes the store uses, bytes evicted so far).
    pub(super) fn evict_while(&self, more: impl Fn(u64, u64) -> bool) -> Vec<String> {
        if self.mode == Mode::ReadOnly {
            return Vec::new();
        }
        let victims = {
            let mut entries = self.entries();
            let mut used = self.used_bytes(&entries);
            let mut freed = 0;
            let mut candidates: Vec<_> = entries
                .values()
                .filter(|p| !p.is_pinned())
                .cloned()
                .collect();
            candidates.sort_by_key(|p| p.last_played_ns.load(Ordering::Relaxed));
            let mut victims = Vec::new();
            for p in candidates {
                if !more(used, freed) {
                    break;
                }
                let bytes = p.bytes.load(Ordering::Relaxed);
                used = used.saturating_sub(bytes);
                freed += bytes;
                entries.remove(&p.key);
                victims.push(p);
            }
            victims
        };
        victims
            .iter()
            .map(|p| {
                info!(key = %p.key, bytes = p.bytes.load(Ordering::Relaxed), "evicting");
                self.evictions.fetch_add(1, Ordering::Relaxed);
                self.remove(p);
                p.key.clone()
            })
            .collect()
    }

    /// Deletes a presentation already taken out of the map.
    pub(super) fn remove(&self, pres: &Presentation) {
        pres.removed.store(true, Ordering::Release);
        fsutil::trash_and_remove(&pres.dir);
    }
}
