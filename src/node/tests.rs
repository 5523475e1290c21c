//! The agent against a fake master (a tonic server in the test) and a real
//! `serve::Server` on a temporary store: the token, Hello, a refusal and
//! the retry, Welcome, inventory, reports, Poll, Prepares, a lost stream.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use streamcache_cache::{Metadata, PresentationState, Store, StoreConfig};
use streamcache_rtsp::framing::Limits;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;
use tonic::Streaming;

use super::requests::AT_SESSION_CAP;
use super::{run, Status};
use crate::catalog::Catalog;
use crate::cluster::protocol::pb::control_server::{Control, ControlServer};
use crate::cluster::protocol::pb::envelope::Body;
use crate::cluster::protocol::{pb, PROTOCOL_VERSION};
use crate::config::Config;
use crate::freshness;
use crate::hub::HubSettings;
use crate::metrics::Metrics;
use crate::mounts::{Mounts, OriginTiming};
use crate::origin::fake::{FakeOrigin, Script};
use crate::origin::CacheHeaders;
use crate::serve::limits::PlayerLimits;
use crate::serve::Server;

const TOKEN: &str = "0123456789abcdef-cluster";
const WAIT: Duration = Duration::from_secs(10);

/// One control stream the fake master accepted.
struct Call {
    authorization: Option<String>,
    from_node: Streaming<pb::Batch>,
    to_node: mpsc::UnboundedSender<Result<pb::Batch, tonic::Status>>,
}

impl Call {
    async fn recv(&mut self) -> Vec<pb::Envelope> {
        let batch = tokio::time::timeout(WAIT, self.from_node.message())
            .await
            .expect("a batch in time")
            .expect("no stream error")
            .expect("the stream goes on");
        batch.messages
    }

    fn send(&self, envelopes: Vec<pb::Envelope>) {
        self.to_node
            .send(Ok(pb::Batch {
                messages: envelopes,
            }))
            .expect("the call is open");
    }

    /// Reads the Hello, which must come first and alone.
    async fn hello(&mut self) -> pb::Hello {
        match self.recv().await.as_slice() {
            [pb::Envelope {
                request_id: 0,
                body: Some(Body::Hello(hello)),
            }] => hello.clone(),
            other => panic!("not a Hello first: {other:?}"),
        }
    }
}

/// Hands every call to the test.
struct FakeMaster {
    calls: mpsc::UnboundedSender<Call>,
}

type ToNode = Pin<Box<dyn Stream<Item = Result<pb::Batch, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Control for FakeMaster {
    type AttachStream = ToNode;

    async fn attach(
        &self,
        request: tonic::Request<Streaming<pb::Batch>>,
    ) -> Result<tonic::Response<ToNode>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (to_node, queued) = mpsc::unbounded_channel();
        let _ = self.calls.send(Call {
            authorization,
            from_node: request.into_inner(),
            to_node,
        });
        let stream = futures_util::stream::unfold(queued, |mut queued| async move {
            queued.recv().await.map(|item| (item, queued))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

async fn start_master() -> (String, mpsc::UnboundedReceiver<Call>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (calls, accepted) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(FakeMaster { calls }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (url, accepted)
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("the agent calls in time")
        .expect("the master runs")
}

/// A server as the daemon builds one, on a store in `dir`.
fn server(config: &Config, dir: &Path) -> Arc<Server> {
    let cfg = StoreConfig {
        budget_bytes: 1 << 30,
        segment_max_bytes: 1 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, _) = Store::open(dir, cfg).unwrap();
    let timing = OriginTiming::from_config(config);
    let metrics = Arc::new(Metrics::new());
    let settings = HubSettings {
        queue_packets: 64,
        linger: timing.linger,
        reconnect_attempts: 0,
        gop_max_bytes: 1 << 20,
        setup_grace: Duration::from_secs(60),
    };
    let catalog = Catalog::new(
        store,
        timing,
        settings,
        Duration::from_secs(3600),
        Arc::clone(&metrics),
    );
    Server::new(
        catalog,
        Mounts::from_config(config),
        metrics,
        Limits {
            max_message_bytes: 64 * 1024,
            max_headers: 64,
        },
        Duration::from_secs(60),
        "127.0.0.1:8554".parse().unwrap(),
        PlayerLimits::from_config(&config.rtsp),
    )
}

/// Stores `key` complete and fresh.
fn store_complete(store: &Store, key: &str) {
    let meta = Metadata {
        key: key.into(),
        sdp: crate::origin::fake::SDP.into(),
        cache_headers: CacheHeaders {
            cache_control: Some("max-age=600".into()),
            ..CacheHeaders::default()
        },
        validated_at_unix_ms: freshness::unix_ms(SystemTime::now()),
        ..Metadata::default()
    };
    let writer = store.open_writer(key, meta).unwrap();
    writer.finish(PresentationState::Complete).unwrap();
}

fn request(id: u64, body: Body) -> pb::Envelope {
    pb::Envelope {
        request_id: id,
        body: Some(body),
    }
}

fn prepare(id: u64, path: &str) -> pb::Envelope {
    request(id, Body::Prepare(pb::Prepare { path: path.into() }))
}

#[tokio::test]
async fn the_agent_registers_reports_and_answers_its_master() {
    let (master, mut calls) = start_master().await;
    let origin = FakeOrigin::start(Script::default()).await;
    let live_key = origin.url().to_string();
    let text = format!(
        "[[mount]]\npath = \"/vod\"\norigin = \"rtsp://127.0.0.1:9/vod\"\n\n\
         [[mount]]\npath = \"/live\"\norigin = \"{live_key}\"\n\n\
         [cluster]\nmaster = \"{master}\"\nnode_id = \"edge-1\"\ntoken = \"{TOKEN}\"\n"
    );
    let config = Config::parse(&text).expect("valid config");
    let dir = tempfile::tempdir().unwrap();
    let server = server(&config, dir.path());
    store_complete(server.catalog.store(), "rtsp://127.0.0.1:9/vod/a");
    let cluster = config.cluster.clone().expect("[cluster]");
    let rtsp_url = "rtsp://10.0.0.5:8554";
    let status = Status::new(&cluster, rtsp_url);
    let agent = tokio::spawn(run(
        Arc::clone(&server),
        cluster,
        rtsp_url.into(),
        3,
        None,
        Arc::clone(&status),
    ));

    // The first call: the token in the metadata, Hello first; refused.
    let mut call = next_call(&mut calls).await;
    assert_eq!(call.authorization, Some(format!("Bearer {TOKEN}")));
    let hello = call.hello().await;
    assert_eq!(
        hello,
        pb::Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: "edge-1".into(),
            rtsp_url: rtsp_url.into(),
            max_sessions: 3,
            max_egress_bps: 1_000_000_000,
            // No peer server: it serves no copies, but takes them.
            max_copy_ingress_bps: 100_000_000,
            ..Default::default()
        }
    );
    call.send(vec![request(
        0,
        Body::Refused(pb::Refused {
            reason: "not today".into(),
        }),
    )]);
    drop(call);
    assert!(!status.connected());

    // It comes back, is welcomed, and sends its inventory and load.
    let mut call = next_call(&mut calls).await;
    assert_eq!(call.hello().await, hello);
    call.send(vec![request(
        0,
        Body::Welcome(pb::Welcome {
            protocol_version: PROTOCOL_VERSION,
            report_period_ms: 100,
        }),
    )]);
    let first = call.recv().await;
    let [pb::Envelope {
        body: Some(Body::Inventory(inventory)),
        ..
    }, pb::Envelope {
        body: Some(Body::Load(load)),
        ..
    }] = first.as_slice()
    else {
        panic!("not Inventory and LoadReport: {first:?}");
    };
    assert_eq!(inventory.titles.len(), 1);
    assert_eq!(inventory.titles[0].key, "rtsp://127.0.0.1:9/vod/a");
    assert!(inventory.titles[0].complete);
    assert_eq!(load.sessions, 0);
    assert!(load.healthy);
    assert!(status.connected());
    // A report each period: the load, no delta (nothing changed).
    let report = call.recv().await;
    assert!(
        matches!(
            report.as_slice(),
            [pb::Envelope {
                body: Some(Body::Load(_)),
                ..
            }]
        ),
        "{report:?}"
    );

    // A Poll: Ack, the load and Done at once.
    call.send(vec![request(7, Body::Poll(pb::Poll {}))]);
    let answer = loop {
        let batch = call.recv().await;
        if !matches!(
            batch.as_slice(),
            [pb::Envelope {
                body: Some(Body::Load(_)),
                ..
            }]
        ) {
            break batch;
        }
    };
    let bodies: Vec<_> = answer.iter().map(|e| e.body.clone()).collect();
    assert!(
        matches!(
            bodies.as_slice(),
            [
                Some(Body::Ack(pb::Ack { request_id: 7 })),
                Some(Body::Load(_)),
                Some(Body::Done(pb::Done { request_id: 7, error })),
            ] if error.is_empty()
        ),
        "{answer:?}"
    );

    // Prepares: stored (with a query), no mount, a new hub, the origin
    // down, and one too many for max_sessions = 3.
    call.send(vec![
        prepare(11, "/vod/a?x=1"),
        prepare(12, "/nowhere"),
        prepare(13, "/live"),
        prepare(14, "/vod/b"),
        prepare(15, "/vod/a"),
    ]);
    let mut acks = Vec::new();
    let mut done = std::collections::BTreeMap::new();
    let mut live_reported = false;
    while done.len() < 5 || !live_reported {
        for envelope in call.recv().await {
            match envelope.body {
                Some(Body::Ack(ack)) => acks.push(ack.request_id),
                Some(Body::Done(d)) => {
                    // Every Done after its Ack.
                    assert!(acks.contains(&d.request_id), "{d:?} before its Ack");
                    done.insert(d.request_id, d.error);
                }
                Some(Body::Delta(delta)) => {
                    live_reported |= delta.holds.iter().any(|t| t.key == live_key && !t.complete);
                }
                _ => {}
            }
        }
    }
    assert_eq!(acks, [11, 12, 13, 14, 15]);
    assert_eq!(done[&11], "");
    assert_eq!(done[&12], "no mount for /nowhere");
    assert_eq!(done[&13], "");
    assert!(
        done[&14].contains("cannot connect to origin"),
        "{}",
        done[&14]
    );
    assert_eq!(done[&15], AT_SESSION_CAP);
    // The two prepared players count as sessions until they come (or for
    // PREPARE_HOLD); the failed prepare does not.
    let sessions = loop {
        let batch = call.recv().await;
        if let Some(Body::Load(load)) = batch.first().and_then(|e| e.body.as_ref()) {
            break load.sessions;
        }
    };
    assert_eq!(sessions, 2);

    // The master goes away: the agent notices and comes back.
    drop(call);
    let mut call = next_call(&mut calls).await;
    call.hello().await;
    assert!(!status.connected());
    agent.abort();
}
