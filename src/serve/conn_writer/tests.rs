use std::task::Waker;

use super::*;

/// A socket stand-in that takes at most `room` more bytes, then blocks
/// until the test makes room; or fails every write once `broken`.
#[derive(Clone, Default)]
struct Pipe(Arc<Mutex<PipeState>>);

#[derive(Default)]
struct PipeState {
    received: Vec<u8>,
    room: usize,
    broken: bool,
    closed: bool,
    waker: Option<Waker>,
    writes: usize,
}

impl Pipe {
    fn with_room(room: usize) -> Pipe {
        let pipe = Pipe::default();
        pipe.0.lock().unwrap().room = room;
        pipe
    }

    fn make_room(&self, room: usize) {
        let mut state = self.0.lock().unwrap();
        state.room += room;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn received(&self) -> Vec<u8> {
        self.0.lock().unwrap().received.clone()
    }
}

/// What the writer owns: dropping it is closing the connection.
struct PipeEnd(Pipe);

impl Drop for PipeEnd {
    fn drop(&mut self) {
        (self.0).0.lock().unwrap().closed = true;
    }
}

impl WriteSocket for PipeEnd {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut state = (self.0).0.lock().unwrap();
        if state.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if state.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        state.writes += 1;
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(state.room);
            state.received.extend_from_slice(&buf[..take]);
            state.room -= take;
            n += take;
        }
        Ok(n)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = (self.0).0.lock().unwrap();
        if state.room > 0 || state.broken {
            Poll::Ready(Ok(()))
        } else {
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_reading_player_is_written_to_directly() {
    let pipe = Pipe::with_room(1 << 20);
    let (writer, _flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    writer.write(b"one ").unwrap();
    writer.write(b"two").unwrap();
    // Written before the flusher ever ran: straight from the caller.
    assert_eq!(pipe.received(), b"one two");
    assert!(writer.lock().queue.is_empty());
}

#[tokio::test]
async fn what_the_socket_does_not_take_follows_in_order() {
    let pipe = Pipe::with_room(3);
    let (writer, _flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    writer.write(b"abcdef").unwrap();
    writer.write(b"ghi").unwrap();
    assert_eq!(pipe.received(), b"abc");
    pipe.make_room(2);
    settle().await;
    assert_eq!(pipe.received(), b"abcde");
    // Newer output never overtakes what waits, even with room again.
    writer.write(b"jk").unwrap();
    pipe.make_room(100);
    settle().await;
    assert_eq!(pipe.received(), b"abcdefghijk");
    writer.write(b"l").unwrap();
    assert_eq!(pipe.received(), b"abcdefghijkl");
}

#[tokio::test]
async fn parts_leave_in_one_writev_and_what_is_not_taken_follows_in_order() {
    let pipe = Pipe::with_room(5);
    let (writer, _flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    let parts = [
        IoSlice::new(b"abc"),
        IoSlice::new(b"defg"),
        IoSlice::new(b"hi"),
    ];
    writer.write_parts(&parts).unwrap();
    assert_eq!(pipe.received(), b"abcde");
    assert_eq!(pipe.0.lock().unwrap().writes, 1);
    // The rest, from the middle of the second part, queued as one piece.
    assert_eq!(writer.lock().queue.len(), 1);
    pipe.make_room(100);
    settle().await;
    assert_eq!(pipe.received(), b"abcdefghi");
}

#[tokio::test]
async fn a_player_that_does_not_read_is_refused_media_but_responses_wait() {
    let pipe = Pipe::with_room(0);
    let (writer, _flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    for _ in 0..OUT_QUEUE {
        writer.write(b"x").unwrap();
    }
    assert_eq!(writer.write(b"x"), Err(Refused::Full));
    let response = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.write_waiting(b"RTSP").await }
    });
    settle().await;
    assert!(!response.is_finished(), "a response waits for room");
    pipe.make_room(1 << 20);
    assert!(response.await.unwrap());
    settle().await;
    let mut expected = vec![b'x'; OUT_QUEUE];
    expected.extend_from_slice(b"RTSP");
    assert_eq!(pipe.received(), expected);
}

#[tokio::test(start_paused = true)]
async fn a_player_whose_oldest_output_waits_too_long_is_refused_media() {
    let pipe = Pipe::with_room(0);
    let (writer, _flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    writer.write(b"tick 1").unwrap();
    tokio::time::advance(OUT_QUEUE_AGE / 2).await;
    writer.write(b"tick 2").unwrap();
    tokio::time::advance(OUT_QUEUE_AGE / 2).await;
    // Two pieces only, but the first has waited long enough.
    assert_eq!(writer.write(b"tick 3"), Err(Refused::Full));
    // Once the player reads again, what waits leaves and media is taken.
    pipe.make_room(1 << 20);
    settle().await;
    assert_eq!(pipe.received(), b"tick 1tick 2");
    writer.write(b"tick 4").unwrap();
}

#[tokio::test]
async fn close_writes_what_is_queued_then_closes() {
    let pipe = Pipe::with_room(2);
    let (writer, flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    writer.write(b"last words").unwrap();
    writer.close();
    assert_eq!(writer.write(b"more"), Err(Refused::Closed));
    settle().await;
    assert!(
        !pipe.0.lock().unwrap().closed,
        "not before the queue is out"
    );
    pipe.make_room(100);
    flusher.await.unwrap();
    assert_eq!(pipe.received(), b"last words");
    assert!(pipe.0.lock().unwrap().closed);
    assert!(!writer.write_waiting(b"RTSP").await);
}

#[tokio::test]
async fn a_failed_write_ends_the_flusher_and_refuses_the_rest() {
    let pipe = Pipe::with_room(1 << 20);
    let (writer, flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    pipe.0.lock().unwrap().broken = true;
    writer.write(b"lost").unwrap(); // taken; the failure shows next
    flusher.await.unwrap();
    assert_eq!(writer.write(b"more"), Err(Refused::Closed));
    assert!(pipe.0.lock().unwrap().closed);
}

#[tokio::test]
async fn queued_pieces_leave_in_one_writev() {
    let pipe = Pipe::with_room(0);
    let (writer, _flusher) = ConnWriter::spawn(PipeEnd(pipe.clone()));
    for piece in [&b"a"[..], b"b", b"c", b"d"] {
        writer.write(piece).unwrap();
    }
    pipe.make_room(100);
    settle().await;
    assert_eq!(pipe.received(), b"abcd");
    assert_eq!(pipe.0.lock().unwrap().writes, 1);
}
