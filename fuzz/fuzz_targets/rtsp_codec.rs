//! Fuzz the framed codec as a socket drives it: the input arrives in reads
//! of varying size (taken from the first byte). Nothing may panic, and the
//! frames must be those of decoding the same bytes in one read.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use streamcache_rtsp::codec::RtspCodec;
use streamcache_rtsp::framing::{Frame, Limits};
use tokio_util::codec::Decoder;

fn limits() -> Limits {
    Limits {
        max_message_bytes: 4096,
        max_headers: 32,
    }
}

/// The frames decoded until the end of the stream, and whether it ended on
/// an error.
fn run(data: &[u8], read: usize) -> (Vec<Frame>, bool) {
    let mut codec = RtspCodec::new(limits());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(read) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&read, data)) = data.split_first() else {
        return;
    };
    let (whole, whole_failed) = run(data, data.len().max(1));
    let (pieces, pieces_failed) = run(data, usize::from(read).max(1));
    let common = whole.len().min(pieces.len());
    assert_eq!(whole[..common], pieces[..common]);
    if !whole_failed && !pieces_failed {
        assert_eq!(whole, pieces);
    }
});
