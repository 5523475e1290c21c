//! The control protocol's messages (`proto/cluster.proto`, compiled by
//! `build.rs`) and the checks and conversions around them, as plain
//! functions: what a master accepts from a node, and the content map's
//! types on the wire.

use streamcache_types::{Npt, NptSpan};

use super::content::Held;
use super::membership::Capacity;

/// The generated messages, client and server.
pub mod pb {
    tonic::include_proto!("streamcache.cluster.v1");
}

/// The protocol version this build speaks; a node of another version is
/// refused with a clear reason.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest node id accepted.
const MAX_ID_LEN: usize = 64;

/// A node's registration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub node_id: String,
    pub rtsp_url: String,
    pub capacity: Capacity,
    /// Where peers fetch its segments; `None`: it serves no copies.
    pub peer_url: Option<String>,
    pub max_copy_egress_bps: u64,
    pub max_copy_ingress_bps: u64,
}

/// Checks a node's `Hello`: the version, an id of printable ASCII (it goes
/// into logs and the admin API), an `rtsp://` URL and a capacity. The error
/// is the reason the master sends back in `Refused` and logs.
pub fn check_hello(hello: &pb::Hello) -> Result<Registration, String> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported (this master speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        ));
    }
    let id = &hello.node_id;
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "node id must be 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    match url::Url::parse(&hello.rtsp_url) {
        Ok(url) if url.scheme() == "rtsp" && url.host().is_some() => {}
        _ => return Err("rtsp_url must be an rtsp://host[:port] URL".into()),
    }
    if hello.max_sessions == 0 || hello.max_egress_bps == 0 {
        return Err("max_sessions and max_egress_bps must be > 0".into());
    }
    let peer_url = match hello.peer_url.as_str() {
        "" => None,
        text => match url::Url::parse(text) {
            Ok(url) if url.scheme() == "http" && url.host().is_some() => {
                Some(text.trim_end_matches('/').to_owned())
            }
            _ => return Err("peer_url must be an http://host[:port] URL".into()),
        },
    };
    Ok(Registration {
        node_id: id.clone(),
        rtsp_url: hello.rtsp_url.trim_end_matches('/').to_owned(),
        capacity: Capacity {
            max_sessions: hello.max_sessions,
            max_egress_bps: hello.max_egress_bps,
        },
        peer_url,
        max_copy_egress_bps: hello.max_copy_egress_bps,
        max_copy_ingress_bps: hello.max_copy_ingress_bps,
    })
}

/// A title on the wire as the content map holds it. Spans whose end is
/// before their start are dropped (a malformed message holds nothing).
pub fn held_of(title: &pb::Title) -> Held {
    Held {
        complete: title.complete,
        spans: title
            .spans
            .iter()
            .filter(|s| s.end_ns >= s.start_ns)
            .map(|s| NptSpan {
                start: Npt::from_ns(s.start_ns),
                end: Npt::from_ns(s.end_ns),
            })
            .collect(),
    }
}

/// A stored title as a node reports it.
pub fn title_of(key: &str, held: &Held) -> pb::Title {
    pb::Title {
        key: key.to_owned(),
        complete: held.complete,
        spans: held
            .spans
            .iter()
            .map(|s| pb::Span {
                start_ns: s.start.as_ns(),
                end_ns: s.end.as_ns(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn hello() -> pb::Hello {
        pb::Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: "edge-1".into(),
            rtsp_url: "rtsp://10.0.0.1:554/".into(),
            max_sessions: 100,
            max_egress_bps: 1_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_hello_is_checked_before_a_node_is_registered() {
        let ok = check_hello(&hello()).expect("valid");
        assert_eq!(ok.rtsp_url, "rtsp://10.0.0.1:554");
        let refused = |h: pb::Hello| check_hello(&h).unwrap_err();
        assert!(refused(pb::Hello {
            protocol_version: 2,
            ..hello()
        })
        .contains("version 2"));
        assert!(refused(pb::Hello {
            node_id: String::new(),
            ..hello()
        })
        .contains("node id"));
        assert!(refused(pb::Hello {
            node_id: "a b\n".into(),
            ..hello()
        })
        .contains("node id"));
        assert!(refused(pb::Hello {
            rtsp_url: "http://x".into(),
            ..hello()
        })
        .contains("rtsp"));
        assert!(refused(pb::Hello {
            max_sessions: 0,
            ..hello()
        })
        .contains("> 0"));
        assert!(refused(pb::Hello {
            peer_url: "ftp://x".into(),
            ..hello()
        })
        .contains("peer_url"));
        let with_peer = check_hello(&pb::Hello {
            peer_url: "http://10.0.0.1:8567/".into(),
            ..hello()
        })
        .expect("valid");
        assert_eq!(with_peer.peer_url.as_deref(), Some("http://10.0.0.1:8567"));
    }

    #[test]
    fn a_batch_survives_the_wire_and_garbage_is_an_error() {
        let held = Held {
            complete: false,
            spans: vec![NptSpan {
                start: Npt::ZERO,
                end: Npt::from_secs(8),
            }],
        };
        let batch = pb::Batch {
            messages: vec![
                pb::Envelope {
                    request_id: 0,
                    body: Some(pb::envelope::Body::Hello(hello())),
                },
                pb::Envelope {
                    request_id: 7,
                    body: Some(pb::envelope::Body::Delta(pb::InventoryDelta {
                        holds: vec![title_of("rtsp://o/a", &held)],
                        dropped: vec!["rtsp://o/b".into()],
                    })),
                },
            ],
        };
        let bytes = batch.encode_to_vec();
        let back = pb::Batch::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, batch);
        let Some(pb::envelope::Body::Delta(delta)) = &back.messages[1].body else {
            panic!("{back:?}");
        };
        assert_eq!(held_of(&delta.holds[0]), held);
        assert!(pb::Batch::decode(&b"\xff\xff\xff\xff"[..]).is_err());
    }
}
