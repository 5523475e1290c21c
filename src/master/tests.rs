//! The master's control service and redirector, in process: a tonic client
//! plays the node, a TCP socket the player. (The real processes are tested
//! in tests/cluster*.rs.)

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;

use super::*;
use crate::cluster::protocol::{pb, PROTOCOL_VERSION};

const TOKEN: &str = "0123456789abcdef";

fn settings() -> Settings {
    Settings {
        report_period: Duration::from_millis(200),
        down_after_polls: 2,
        egress_window: Duration::from_secs(10),
        prepare_timeout: Duration::from_millis(500),
        player_bitrate_bps: 1_000_000,
        copy_link_bps: 100_000_000,
        copy_cluster_bps: 1_000_000_000,
        copy_faulty_after: 3,
        copy_failure_window: Duration::from_secs(300),
    }
}

struct Running {
    state: Arc<MasterState>,
    control: std::net::SocketAddr,
    rtsp: std::net::SocketAddr,
}

async fn start_master() -> Running {
    let state = Arc::new(MasterState::new(settings()));
    let metrics = Arc::new(MasterMetrics::new(Arc::clone(&state)));
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_addr = control.local_addr().unwrap();
    tokio::spawn(control::run(
        control,
        Arc::clone(&state),
        Arc::clone(&metrics),
        TOKEN.into(),
    ));
    let config =
        Config::parse("[[mount]]\npath = \"/cams\"\norigin = \"rtsp://origin.invalid/cams\"\n")
            .unwrap();
    let rtsp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rtsp_addr = rtsp.local_addr().unwrap();
    let redirector = redirect::Redirector::new(
        Arc::clone(&state),
        metrics,
        Mounts::from_config(&config),
        Limits {
            max_message_bytes: 65536,
            max_headers: 64,
        },
        7,
    );
    tokio::spawn(redirect::run(rtsp, Arc::new(redirector)));
    tokio::spawn(poll_loop(Arc::clone(&state)));
    Running {
        state,
        control: control_addr,
        rtsp: rtsp_addr,
    }
}

fn hello(id: &str, version: u32) -> pb::Batch {
    pb::Batch {
        messages: vec![pb::Envelope {
            request_id: 0,
            body: Some(pb::envelope::Body::Hello(pb::Hello {
                protocol_version: version,
                node_id: id.into(),
                rtsp_url: format!("rtsp://{id}.test:554"),
                max_sessions: 10,
                max_egress_bps: 100_000_000,
                ..Default::default()
            })),
        }],
    }
}

/// A node's end of the stream: what it sends, and what it receives.
struct FakeNode {
    /// Dropping the client may close the connection under the stream.
    _client: pb::control_client::ControlClient<tonic::transport::Channel>,
    to_master: mpsc::Sender<pb::Batch>,
    from_master: tonic::Streaming<pb::Batch>,
}

async fn attach(
    addr: std::net::SocketAddr,
    token: &str,
    first: pb::Batch,
) -> Result<FakeNode, tonic::Status> {
    let mut client = pb::control_client::ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (to_master, rx) = mpsc::channel(16);
    to_master.send(first).await.unwrap();
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut request = tonic::Request::new(outbound);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    let from_master = client.attach(request).await?.into_inner();
    Ok(FakeNode {
        _client: client,
        to_master,
        from_master,
    })
}

fn body(batch: &pb::Batch) -> &pb::envelope::Body {
    batch.messages[0].body.as_ref().unwrap()
}

#[tokio::test]
async fn a_node_needs_the_token_and_a_valid_hello() {
    let master = start_master().await;
    let wrong = attach(
        master.control,
        "not-the-token-at-all",
        hello("a", PROTOCOL_VERSION),
    )
    .await;
    assert_eq!(wrong.err().unwrap().code(), tonic::Code::Unauthenticated);

    let mut old = attach(master.control, TOKEN, hello("a", 99)).await.unwrap();
    let refused = old.from_master.message().await.unwrap().unwrap();
    let pb::envelope::Body::Refused(refused) = body(&refused) else {
        panic!("{refused:?}");
    };
    assert!(refused.reason.contains("version 99"), "{}", refused.reason);
    assert!(master.state.members().is_empty());

    // Garbage on the control port: refused, and the master goes on.
    let mut garbage = TcpStream::connect(master.control).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), garbage.read_to_end(&mut sink)).await;

    let mut node = attach(master.control, TOKEN, hello("a", PROTOCOL_VERSION))
        .await
        .unwrap();
    let welcome = node.from_master.message().await.unwrap().unwrap();
    assert!(matches!(body(&welcome), pb::envelope::Body::Welcome(w) if w.report_period_ms == 200));
    assert_eq!(master.state.members().len(), 1);
    drop(node.to_master);
}

#[tokio::test]
async fn a_describe_is_redirected_to_a_node_that_prepared() {
    let master = start_master().await;
    let mut node = attach(master.control, TOKEN, hello("edge-1", PROTOCOL_VERSION))
        .await
        .unwrap();
    let _welcome = node.from_master.message().await.unwrap().unwrap();
    node.to_master
        .send(pb::Batch {
            messages: vec![pb::Envelope {
                request_id: 0,
                body: Some(pb::envelope::Body::Load(pb::LoadReport {
                    sessions: 0,
                    healthy: true,
                    ..Default::default()
                })),
            }],
        })
        .await
        .unwrap();
    // A node is a candidate once its first report says it is healthy.
    while !master.state.members().iter().any(|(m, _)| m.load.healthy) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The node answers every request: Ack at once, then Done.
    let (prepared_tx, mut prepared) = mpsc::unbounded_channel();
    let answering = tokio::spawn(async move {
        while let Ok(Some(batch)) = node.from_master.message().await {
            for message in batch.messages {
                let id = message.request_id;
                if let Some(pb::envelope::Body::Prepare(p)) = &message.body {
                    let _ = prepared_tx.send(p.path.clone());
                }
                let answer = |body| pb::Envelope {
                    request_id: 0,
                    body: Some(body),
                };
                let load = pb::envelope::Body::Load(pb::LoadReport {
                    healthy: true,
                    ..Default::default()
                });
                let _ = node
                    .to_master
                    .send(pb::Batch {
                        messages: vec![
                            answer(pb::envelope::Body::Ack(pb::Ack { request_id: id })),
                            answer(load),
                            answer(pb::envelope::Body::Done(pb::Done {
                                request_id: id,
                                error: String::new(),
                            })),
                        ],
                    })
                    .await;
            }
        }
    });
    let response = rtsp_exchange(
        master.rtsp,
        "DESCRIBE rtsp://master.test/cams/front?x=1 RTSP/1.0\r\nCSeq: 3\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("RTSP/1.0 302"),
        "{response} {:?}",
        master.state.placements()
    );
    assert!(
        response.contains("Location: rtsp://edge-1.test:554/cams/front?x=1\r\n"),
        "{response}"
    );
    assert!(response.contains("CSeq: 3\r\n"), "{response}");
    assert_eq!(prepared.recv().await.unwrap(), "/cams/front?x=1");
    let placements = master.state.placements();
    assert_eq!(placements[0].node.as_deref(), Some("edge-1"));

    let unknown = rtsp_exchange(
        master.rtsp,
        "DESCRIBE rtsp://master.test/elsewhere RTSP/1.0\r\nCSeq: 4\r\n\r\n",
    )
    .await;
    assert!(unknown.starts_with("RTSP/1.0 404"), "{unknown}");
    answering.abort();
}

#[tokio::test]
async fn without_a_node_a_player_is_told_to_retry_and_a_silent_node_goes_down() {
    let master = start_master().await;
    let response = rtsp_exchange(
        master.rtsp,
        "DESCRIBE rtsp://master.test/cams/a RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("RTSP/1.0 503"), "{response}");
    assert!(response.contains("Retry-After: 7\r\n"), "{response}");

    // A node that registers and never answers: polled, then down.
    let mut node = attach(master.control, TOKEN, hello("mute", PROTOCOL_VERSION))
        .await
        .unwrap();
    let _welcome = node.from_master.message().await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let members = master.state.members();
        if members[0].0.health == crate::cluster::membership::Health::Down {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never marked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(node);
}

async fn rtsp_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut text = String::new();
    while !text.contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}
