//! Starting a session: connect, SETUP every track over one lower
//! transport, PLAY, and read what the answers said.

use super::*;

impl Running {
    /// Connects, SETUPs every track over `lower` and PLAYs.
    pub(super) async fn establish(
        t: &OriginTarget,
        d: &Described,
        start_npt: Option<Npt>,
        lower: LowerTransport,
        events: mpsc::Sender<OriginEvent>,
    ) -> Result<Running, OriginError> {
        let mut conn = Connection::connect(t).await?;
        let origin_ip = conn.peer().ip();
        let aggregate = d
            .sdp
            .aggregate_url(&d.base_url)
            .map_err(|e| OriginError::protocol(conn.origin(), e.to_string()))?;

        let options = Req::new(Method::Options, &aggregate);
        let resp = conn.request(&options, |_, _| {}).await?;
        let keepalive = if resp.status().is_success() && lists_method(&resp, "GET_PARAMETER") {
            Method::GetParameter
        } else {
            Method::Options
        };

        let mut tracks = Vec::with_capacity(d.tracks.len());
        let mut udp = Vec::new();
        let mut session_timeout = None;
        for (i, track) in d.tracks.iter().enumerate() {
            let offer = match lower {
                LowerTransport::Udp => {
                    let (rtp, rtcp) =
                        bind_pair(origin_ip).await.map_err(|e| OriginError::Local {
                            origin: conn.origin().to_owned(),
                            message: format!("no UDP port pair: {e}"),
                        })?;
                    let port = |s: &UdpSocket| s.local_addr().map(|a| a.port());
                    let ports = (port(&rtp), port(&rtcp));
                    udp.extend([rtp, rtcp]);
                    match ports {
                        (Ok(a), Ok(b)) => TransportSpec::udp((a, b)),
                        (Err(e), _) | (_, Err(e)) => {
                            return Err(OriginError::io(conn.origin(), &e))
                        }
                    }
                }
                LowerTransport::Tcp => {
                    let rtp = u8::try_from(2 * i)
                        .ok()
                        .filter(|c| *c < 254)
                        .ok_or_else(|| {
                            OriginError::protocol(
                                conn.origin(),
                                "more tracks than interleaved channels",
                            )
                        })?;
                    TransportSpec::tcp((rtp, rtp + 1))
                }
            };
            let setup = Req::new(Method::Setup, &track.control_url)
                .header(headers::TRANSPORT, offer.to_string());
            let resp = conn.request(&setup, |_, _| {}).await?;
            let resp = conn.expect_success(&setup.method, resp)?;
            if session_timeout.is_none() {
                let session = resp
                    .header(&headers::SESSION)
                    .and_then(|v| SessionHeader::parse(v.as_str()).ok())
                    .ok_or_else(|| {
                        OriginError::protocol(conn.origin(), "a SETUP answer without Session")
                    })?;
                session_timeout = Some(session.timeout_or_default());
                conn.set_session(session.id);
            }
            let reply = resp
                .header(&headers::TRANSPORT)
                .and_then(|v| TransportSpec::parse(v.as_str()).ok());
            let reply_lower = reply.as_ref().map_or(lower, |r| r.lower);
            if reply_lower != lower {
                return Err(OriginError::protocol(
                    conn.origin(),
                    format!("a SETUP answer with another transport than {offer}"),
                ));
            }
            tracks.push(Track {
                channels: match lower {
                    LowerTransport::Tcp => reply
                        .as_ref()
                        .and_then(|r| r.interleaved)
                        .or(offer.interleaved),
                    LowerTransport::Udp => None,
                },
                server_rtcp: reply
                    .as_ref()
                    .and_then(|r| r.server_port)
                    .map(|(_, rtcp)| SocketAddr::new(origin_ip, rtcp)),
                stats: RecvStats::default(),
                bye: false,
            });
        }

        let mut play = Req::new(Method::Play, &aggregate);
        if let Some(npt) = start_npt {
            let range = PlayRange {
                start: NptStart::At(npt),
                end: None,
            };
            play = play.header(headers::RANGE, range.to_string());
        }
        let mut early = Vec::new();
        let resp = conn.request(&play, |ch, p| early.push((ch, p))).await?;
        let play_info = PlayInfo::from_response(&resp, d, &aggregate);
        conn.expect_success(&play.method, resp)?;
        let timeout_secs = session_timeout.unwrap_or(SessionHeader::DEFAULT_TIMEOUT);
        info!(
            origin = conn.origin(),
            transport = ?lower,
            tracks = tracks.len(),
            session_timeout = timeout_secs,
            "origin session playing"
        );
        let now = Instant::now();
        Ok(Running {
            conn,
            origin_ip,
            aggregate,
            tracks,
            udp,
            events,
            early,
            play: play_info,
            keepalive,
            keepalive_every: Duration::from_secs(u64::from(timeout_secs / 2).max(1)),
            pending_keepalive: None,
            keepalive_reauthorized: false,
            last_media: now,
            last_report: now,
            dropped: 0,
            ssrc: rand::random(),
            first_media: None,
            bye_deadline: None,
        })
    }
}

/// `true` if the response's `Public` header lists `method`.
fn lists_method(resp: &Response<Vec<u8>>, method: &str) -> bool {
    resp.header(&headers::PUBLIC).is_some_and(|v| {
        v.as_str()
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case(method))
    })
}
