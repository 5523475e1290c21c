use super::*;
use bytes::Bytes;

#[tokio::test]
async fn a_batch_reaches_every_destination_in_order() {
    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // Destinations interleaved, every datagram of its own size.
    let n = 200;
    let batch: Vec<(SocketAddr, Bytes)> = (0..n)
        .map(|i: u32| {
            let dest = if i.is_multiple_of(3) { to_b } else { to_a };
            (dest, Bytes::from(format!("datagram {i}")))
        })
        .collect();
    let total: u64 = batch.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(send_datagrams(&tx, &batch).await, total);

    for (socket, dest) in [(&a, to_a), (&b, to_b)] {
        let expected: Vec<&Bytes> = batch
            .iter()
            .filter(|(d, _)| *d == dest)
            .map(|(_, data)| data)
            .collect();
        let mut buf = [0u8; 64];
        for want in expected {
            let (len, from) = socket.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..len], &want[..]);
        }
    }
}

#[tokio::test]
async fn a_refused_datagram_does_not_stop_the_batch() {
    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = rx.local_addr().unwrap();
    // An IPv6 destination on an IPv4 socket fails on its own.
    let bad: SocketAddr = "[::1]:9".parse().unwrap();
    let batch = vec![
        (to, Bytes::from_static(b"one")),
        (bad, Bytes::from_static(b"lost")),
        (to, Bytes::from_static(b"two")),
    ];
    assert_eq!(send_datagrams(&tx, &batch).await, 6);
    let mut buf = [0u8; 16];
    for want in [&b"one"[..], b"two"] {
        let (len, _) = rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], want);
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn without_segmentation_every_datagram_is_a_message() {
    let sizes = [(addr(1), 1200), (addr(1), 1200), (addr(2), 300)];
    assert_eq!(plan(&sizes, false), (vec![0..1, 1..2, 2..3], None));
}

#[test]
fn a_frame_s_fragments_to_one_port_are_one_message_ending_with_the_short_one() {
    let video = addr(5000);
    let audio = addr(5002);
    let sizes = [
        (video, 1400),
        (video, 1400),
        (video, 1400),
        (video, 700), // the frame's last fragment
        (video, 1400),
        (audio, 1400), // another destination starts a message
        (audio, 300),
        (audio, 300), // after a short one: a message of its own
    ];
    assert_eq!(
        plan(&sizes, true),
        (vec![0..4, 4..5, 5..7, 7..8], Some(1400))
    );
}

#[test]
fn segmented_messages_keep_to_the_kernel_s_bounds() {
    // 100 full-size datagrams: at most 64 a message.
    let sizes = vec![(addr(1), 1000); 100];
    assert_eq!(plan(&sizes, true), (vec![0..64, 64..100], Some(1000)));
    // 30,000-byte datagrams: at most 65,507 bytes a message, so two.
    let sizes = vec![(addr(1), 30_000); 5];
    assert_eq!(plan(&sizes, true), (vec![0..2, 2..4, 4..5], Some(30_000)));
    // Nothing to join (a short datagram only ends a message): no
    // segmentation asked for.
    let sizes = [(addr(1), 400), (addr(1), 500), (addr(2), 500)];
    assert_eq!(plan(&sizes, true), (vec![0..1, 1..2, 2..3], None));
}

#[tokio::test]
async fn segmented_runs_arrive_as_the_datagrams_they_were() {
    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = rx.local_addr().unwrap();
    // Three frames of full-size fragments and a short last one.
    let mut batch: Vec<(SocketAddr, Bytes)> = Vec::new();
    for frame in 0..3u8 {
        for i in 0..10u8 {
            let len = if i == 9 { 333 } else { 1200 };
            batch.push((to, Bytes::from(vec![frame * 16 + i; len])));
        }
    }
    let total: u64 = batch.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(send_datagrams(&tx, &batch).await, total);
    assert!(
        GSO.load(Ordering::Relaxed),
        "loopback on Linux ≥ 4.18 takes segmented messages"
    );
    let mut buf = [0u8; 2048];
    for (_, want) in &batch {
        let (len, _) = rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], &want[..]);
    }
}
