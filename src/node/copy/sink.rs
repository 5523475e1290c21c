//! Where the copies of one key write: one store writer for all of them,
//! taken in npt order. The copy whose span starts first writes as its
//! records are verified; the others keep theirs (in memory, up to a bound,
//! then they stop fetching) until every copy of an earlier span has
//! ended. A copy that has begun writing keeps the writer until it ends,
//! even when a copy of an earlier span (one resumed after a failure)
//! joins meanwhile; that one then writes a run of its own. The writer opens as soon as the title's description is known and
//! stays open while any copy of the key runs, so players following it wait
//! for more rather than end between two spans.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use streamcache_cache::{Metadata, Npt, NptSpan, PresentationState, Store, Writer};
use streamcache_types::HELD_SLACK;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::parse::{Received, Tail};
use crate::catalog::CopyingKeys;

/// A recording reaching this close to the title's end holds all of it (the
/// hub's recorder seals `complete` by the same rule).
const END_SLACK: Npt = Npt::from_secs(1);

/// Ended copies' tails kept for a resume (the latest, all keys).
const TAILS_KEPT: usize = 64;
/// How far a resume's start may be from a tail's `held_to` (it travels to
/// the master and back as seconds in an `f64`).
const TAIL_MATCH_NS: u64 = 1_000_000;

/// The sinks of the keys being copied.
#[derive(Clone)]
pub struct Sinks {
    store: Store,
    copying: CopyingKeys,
    keys: Arc<Mutex<HashMap<String, Arc<Sink>>>>,
    /// What the copies that ended having stored something stored last, by
    /// key, the latest last: a copy resuming one continues after it.
    tails: Arc<Mutex<VecDeque<(String, Tail)>>>,
}

/// One key's writer and the copies queued for it.
pub struct Sink {
    key: String,
    store: Store,
    copying: CopyingKeys,
    state: Mutex<State>,
    turn: Notify,
}

#[derive(Default)]
struct State {
    /// Copies not ended, by (span start, copy id): the first one writes.
    queue: BTreeSet<(u64, u64)>,
    /// The copy that has written and not ended: it keeps the writer until
    /// it ends, even if a copy of an earlier span joins meanwhile (one
    /// resumed after a failure), so that its span is never cut in two
    /// runs at a record where no player can start.
    writing: Option<(u64, u64)>,
    writer: Option<Writer>,
    /// npt of the last record written through `writer`.
    last_ns: Option<u64>,
}

/// A copy's place in its key's queue; leaving it (drop) lets the next
/// copy write, and the last one closes the writer.
pub struct Place {
    sinks: Sinks,
    sink: Arc<Sink>,
    slot: (u64, u64),
    /// What this copy has stored last.
    tail: Mutex<Option<Tail>>,
}

impl Sinks {
    pub fn new(store: Store, copying: CopyingKeys) -> Sinks {
        Sinks {
            store,
            copying,
            keys: Arc::default(),
            tails: Arc::default(),
        }
    }

    /// What the ended copy of `key` that had stored to about `held_to_ns`
    /// stored last, if one did (and this node still knows it).
    pub fn tail(&self, key: &str, held_to_ns: u64) -> Option<Tail> {
        lock(&self.tails)
            .iter()
            .rev()
            .filter(|(k, _)| k == key)
            .map(|(_, tail)| tail)
            .filter(|tail| tail.held_to_ns.abs_diff(held_to_ns) <= TAIL_MATCH_NS)
            .min_by_key(|tail| tail.held_to_ns.abs_diff(held_to_ns))
            .cloned()
    }

    /// Queues copy `id` of `key`'s span starting at `start_ns`.
    pub fn join(&self, key: &str, id: u64, start_ns: u64) -> Place {
        let sink = Arc::clone(lock(&self.keys).entry(key.to_owned()).or_insert_with(|| {
            Arc::new(Sink {
                key: key.to_owned(),
                store: self.store.clone(),
                copying: self.copying.clone(),
                state: Mutex::default(),
                turn: Notify::new(),
            })
        }));
        let slot = (start_ns, id);
        lock(&sink.state).queue.insert(slot);
        Place {
            sinks: self.clone(),
            sink,
            slot,
            tail: Mutex::default(),
        }
    }
}

impl Place {
    /// Whether this copy writes: it has begun to, or no copy is writing
    /// and every copy of an earlier span has ended.
    pub fn is_turn(&self) -> bool {
        let state = lock(&self.sink.state);
        match state.writing {
            Some(writing) => writing == self.slot,
            None => state.queue.first() == Some(&self.slot),
        }
    }

    /// Waits for this copy's turn.
    pub async fn turn(&self) {
        loop {
            let notified = self.sink.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_turn() {
                return;
            }
            notified.await;
        }
    }

    /// Writes `records` (verified, in order; this copy's turn). A span
    /// that does not continue what was written starts a new run; its first
    /// record keeps the source's flags, unlike a fill's run, which is
    /// flagged as a discontinuity: a fill's run overlaps what is held (the
    /// origin starts it at an earlier keyframe) and a player crossing into
    /// it drops what it had already (up to 0.5 s), whereas copies split
    /// the title at one record, on the source's timeline, and their runs
    /// adjoin exactly — flagged, a player lost the 0.5 s after the
    /// boundary. `meta` opens the writer. Returns the npt of the last
    /// record written.
    pub fn write(
        &self,
        meta: &Metadata,
        records: impl IntoIterator<Item = Received>,
    ) -> Result<Option<u64>, String> {
        let sink = &self.sink;
        let mut state = lock(&sink.state);
        let mut tail = lock(&self.tail);
        let mut written = None;
        for record in records {
            let npt = record.media_time.as_ns();
            // Continuing: about where the run has got to (tracks interleave
            // within the slack). A record far behind it belongs to an
            // earlier span (one resumed after a failed copy, whose later
            // neighbour had its turn meanwhile): a run of its own, never
            // appended after later records.
            let continues = state.last_ns.is_some_and(|last| {
                npt <= last.saturating_add(HELD_SLACK.as_ns())
                    && npt.saturating_add(HELD_SLACK.as_ns()) >= last
            });
            if state.writer.is_some() && !continues && state.last_ns.is_some() {
                // A gap (an earlier span failed): a run holds no gap.
                sink.close(&mut state);
            }
            sink.open(&mut state, meta)?;
            let Some(writer) = state.writer.as_mut() else {
                break;
            };
            writer
                .append(&record.as_input())
                .map_err(|e| format!("cannot store the copy: {e}"))?;
            state.last_ns = Some(state.last_ns.map_or(npt, |last| last.max(npt)));
            written = Some(npt);
            state.writing = Some(self.slot);
            tail.get_or_insert_with(Tail::default).stored(&record);
        }
        // As the copy's progress has it (`held_to_ns`).
        if let (Some(tail), Some(npt)) = (tail.as_mut(), written) {
            tail.held_to_ns = tail.held_to_ns.max(npt);
        }
        Ok(written)
    }
}

impl Place {
    /// Opens the key's writer now if it is not open (with the title's
    /// description, before any record): players and the master's Prepare
    /// find the title in the store from here on.
    pub fn open(&self, meta: &Metadata) -> Result<(), String> {
        self.sink.open(&mut lock(&self.sink.state), meta)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(tail) = lock(&self.tail).take() {
            let mut tails = lock(&self.sinks.tails);
            if tails.len() >= TAILS_KEPT {
                tails.pop_front();
            }
            tails.push_back((self.sink.key.clone(), tail));
        }
        let sink = &self.sink;
        let mut state = lock(&sink.state);
        state.queue.remove(&self.slot);
        if state.writing == Some(self.slot) {
            state.writing = None;
        }
        if state.queue.is_empty() {
            sink.close(&mut state);
            let mut keys = lock(&self.sinks.keys);
            if keys.get(&sink.key).is_some_and(|s| Arc::ptr_eq(s, sink)) {
                keys.remove(&sink.key);
            }
        }
        drop(state);
        sink.turn.notify_waiters();
    }
}

impl Sink {
    fn open(&self, state: &mut State, meta: &Metadata) -> Result<(), String> {
        if state.writer.is_none() {
            let writer = self
                .store
                .open_writer(&self.key, meta.clone())
                .map_err(|e| format!("cannot store the copy: {e}"))?;
            state.writer = Some(writer);
            self.copying.touch();
        }
        Ok(())
    }

    /// Closes the writer (if open): `complete` when the title is held from
    /// its start to its end, as the hub's recorder decides.
    fn close(&self, state: &mut State) {
        let Some(writer) = state.writer.take() else {
            return;
        };
        state.last_ns = None;
        let held = self.store.metadata(&self.key).ok().flatten();
        let complete = held.is_some_and(|meta| match meta.range {
            Some(range) => range.end.is_some_and(|end| {
                NptSpan::held_to(&meta.spans, range.start).saturating_add(END_SLACK) >= end
            }),
            None => false,
        });
        let finished = if complete {
            PresentationState::Complete
        } else {
            PresentationState::Partial
        };
        match writer.finish(finished) {
            Ok(()) => info!(key = %self.key, state = ?finished, "copy stored"),
            Err(e) => warn!(key = %self.key, error = %e, "cannot seal the copy"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::copy::tests::{meta, open_store, KEY, STEP_NS};
    use bytes::Bytes;
    use streamcache_cache::{RecordFlags, RecordKind};

    /// Records `from..to` (40 ms apart, video and audio in turn, video
    /// random-access once a second).
    fn records(from: u64, to: u64) -> Vec<Received> {
        (from..to)
            .map(|i| Received {
                track: (i % 2) as u8,
                kind: RecordKind::Rtp,
                flags: RecordFlags {
                    random_access: i % 25 == 0,
                    discontinuity: false,
                },
                media_time: Npt::from_ns(i * STEP_NS),
                payload: Bytes::from(vec![i as u8; 100]),
            })
            .collect()
    }

    /// Found end to end (tests/cluster_copy_faults.rs): the copy of the
    /// first half fails, the second half's copy gets its turn and writes,
    /// then the first half's resumed copy joins. It waits for the second
    /// half to end (taking the writer in the middle cut that half in two
    /// runs at a record where no player can start: a player lost the GOP
    /// after the cut), then writes. Its records must not be appended to the
    /// run after the later ones (a player then started at the second half
    /// and played records out of order): they make a run of their own, and
    /// the title plays in npt order, with no discontinuity where the runs
    /// meet (flagged, a player crossing there lost 0.5 s of frames).
    #[tokio::test]
    async fn an_earlier_span_written_after_a_later_one_plays_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path());
        let sinks = Sinks::new(store.clone(), CopyingKeys::default());
        let meta = meta(250);
        let later = sinks.join(KEY, 2, 125 * STEP_NS);
        assert!(later.is_turn());
        later.write(&meta, records(125, 175)).expect("write");
        // The earlier span's copy joins while the later one is writing:
        // the later keeps the writer to its end (its span in one run).
        let resumed = sinks.join(KEY, 3, 0);
        assert!(later.is_turn() && !resumed.is_turn());
        later.write(&meta, records(175, 250)).expect("write");
        drop(later);
        assert!(resumed.is_turn());
        resumed.write(&meta, records(0, 125)).expect("write");
        drop(resumed);
        // What each copy stored last is kept for a copy resuming it.
        let tail = sinks
            .tail(KEY, 124 * STEP_NS)
            .expect("the resumed copy's tail");
        assert_eq!(tail.tracks.len(), 2);
        assert_eq!(tail.tracks[0].as_ref().map(|t| t.0), Some(124 * STEP_NS));
        assert_eq!(tail.tracks[1].as_ref().map(|t| t.0), Some(123 * STEP_NS));
        assert!(sinks.tail(KEY, 200 * STEP_NS).is_none());
        assert!(sinks.tail("other", 124 * STEP_NS).is_none());

        let reader = store.open_reader(KEY).expect("readable").expect("stored");
        let mut cursor = reader.cursor();
        let (mut played, mut flagged) = (Vec::new(), Vec::new());
        while let Some(record) = cursor.next() {
            let record = record.expect("verified");
            played.push(record.media_time.as_ns() / STEP_NS);
            if record.flags.discontinuity {
                flagged.push(record.media_time.as_ns() / STEP_NS);
            }
        }
        assert_eq!(played, (0..250).collect::<Vec<_>>());
        // The runs adjoin exactly: nothing for a player to splice.
        assert!(flagged.is_empty(), "discontinuities at {flagged:?}");
        let held = store.metadata(KEY).expect("meta").expect("meta");
        assert_eq!(held.state, PresentationState::Complete, "{:?}", held.spans);
    }

    #[tokio::test]
    async fn copies_of_one_key_write_in_span_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path());
        let sinks = Sinks::new(store, CopyingKeys::default());
        // Joined out of order: the later span first.
        let later = sinks.join(KEY, 2, 10_000_000_000);
        let earlier = sinks.join(KEY, 1, 0);
        assert!(earlier.is_turn());
        assert!(!later.is_turn());
        let waiting = tokio::spawn(async move {
            later.turn().await;
            later
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(earlier);
        let later = waiting.await.expect("turn");
        assert!(later.is_turn());
    }
}
