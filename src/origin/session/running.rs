//! The running session's task: receive media on every socket, keep the
//! session alive, send receiver reports, and say how it ended.

use super::*;

impl Running {
    pub(super) async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        first_media: Option<oneshot::Sender<Result<(), OriginError>>>,
    ) {
        self.first_media = first_media;
        // Open the RTCP path (and any NAT binding) right away.
        let exit = match self.send_reports().await {
            Some(exit) => exit,
            None => self.main_loop(&mut stop).await,
        };
        match exit {
            Exit::Stopped => self.teardown().await,
            Exit::Ended(reason) => {
                if !matches!(reason, EndReason::Eof) {
                    self.teardown().await;
                }
                match self.first_media.take() {
                    // Still being started: the failure goes to `start`.
                    Some(first) => {
                        let _ = first.send(Err(self.as_error(reason)));
                    }
                    None => {
                        let _ = self.events.send(OriginEvent::Ended { reason }).await;
                    }
                }
            }
        }
    }

    async fn main_loop(&mut self, stop: &mut oneshot::Receiver<()>) -> Exit {
        for (channel, payload) in std::mem::take(&mut self.early) {
            if let Some(exit) = self.on_interleaved(channel, payload) {
                return exit;
            }
        }
        let mut housekeeping = interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut keepalive =
            interval_at(Instant::now() + self.keepalive_every, self.keepalive_every);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 65536];
        let mut next_socket = 0;
        loop {
            let exit = tokio::select! {
                _ = &mut *stop => Some(Exit::Stopped),
                frame = self.conn.read_frame() => self.on_frame(frame).await,
                (i, r) = recv_any(&self.udp, &mut buf, &mut next_socket) => match r {
                    Ok((n, from)) => self.on_datagram(i, &buf[..n], from),
                    Err(e) => {
                        // E.g. ICMP port unreachable after an RTCP report.
                        debug!(origin = self.conn.origin(), error = %e, "UDP receive error");
                        None
                    }
                },
                _ = keepalive.tick() => self.send_keepalive().await,
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = sleep_until_opt(self.bye_deadline) => Some(self.end_after_bye(&mut buf)),
            };
            if let Some(exit) = exit {
                if self.bye_deadline.is_some() && matches!(exit, Exit::Ended(EndReason::Eof)) {
                    // Closed during the BYE grace: the datagrams already
                    // queued still count.
                    return self.end_after_bye(&mut buf);
                }
                return exit;
            }
        }
    }

    async fn on_frame(&mut self, frame: Result<Frame, OriginError>) -> Option<Exit> {
        match frame {
            Ok(Frame::Interleaved { channel, payload }) => self.on_interleaved(channel, payload),
            Ok(Frame::Response(r)) => self.on_response(r).await,
            Ok(Frame::Request(r)) => self
                .conn
                .answer_origin_request(&r)
                .await
                .err()
                .map(|e| Exit::Ended(EndReason::Failed(e))),
            Err(OriginError::Io {
                kind: std::io::ErrorKind::UnexpectedEof,
                ..
            }) => Some(Exit::Ended(EndReason::Eof)),
            Err(e) => Some(Exit::Ended(EndReason::Failed(e))),
        }
    }

    fn on_interleaved(&mut self, channel: u8, payload: Vec<u8>) -> Option<Exit> {
        let found = self
            .tracks
            .iter()
            .enumerate()
            .find_map(|(i, t)| match t.channels {
                Some((rtp, _)) if rtp == channel => Some((i, false)),
                Some((_, rtcp)) if rtcp == channel => Some((i, true)),
                _ => None,
            });
        match found {
            Some((track, rtcp)) => self.deliver(track, rtcp, Bytes::from(payload)),
            None => {
                debug!(
                    origin = self.conn.origin(),
                    channel, "data on an unknown interleaved channel"
                );
                None
            }
        }
    }

    fn on_datagram(&mut self, socket: usize, data: &[u8], from: SocketAddr) -> Option<Exit> {
        if from.ip() != self.origin_ip {
            debug!(origin = self.conn.origin(), %from, "UDP packet from a stranger ignored");
            return None;
        }
        self.deliver(socket / 2, socket % 2 == 1, Bytes::copy_from_slice(data))
    }

    /// Updates statistics and forwards one packet to the consumer.
    fn deliver(&mut self, track: usize, rtcp: bool, data: Bytes) -> Option<Exit> {
        let t = &mut self.tracks[track];
        if rtcp {
            if let Ok(summary) = parse_rtcp(&data) {
                if let Some(sr) = summary.sender_reports.first() {
                    t.stats.on_sender_report(sr.ntp);
                }
                t.bye |= !summary.bye.is_empty();
            }
        } else {
            if let Ok(h) = RtpHeader::parse(&data) {
                t.stats.on_rtp(&h);
            }
            self.last_media = Instant::now();
            if let Some(first) = self.first_media.take() {
                let _ = first.send(Ok(()));
            }
        }
        match self
            .events
            .try_send(OriginEvent::Packet { track, rtcp, data })
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                    warn!(
                        origin = self.conn.origin(),
                        dropped = self.dropped,
                        "consumer too slow: dropping origin packets"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => return Some(Exit::Stopped),
        }
        if rtcp && self.bye_deadline.is_none() && self.tracks.iter().all(|t| t.bye) {
            info!(
                origin = self.conn.origin(),
                "origin sent BYE on every track"
            );
            if self.udp.is_empty() {
                return Some(Exit::Ended(EndReason::Bye));
            }
            self.bye_deadline = Some(Instant::now() + BYE_GRACE);
        }
        None
    }

    /// The BYE grace is over: delivers the datagrams still queued on the
    /// sockets (the task may not have been scheduled to read them), then
    /// ends the session. At most a queue's worth per socket, so an origin
    /// that keeps sending after its BYE cannot hold the session open.
    fn end_after_bye(&mut self, buf: &mut [u8]) -> Exit {
        for socket in 0..self.udp.len() {
            for _ in 0..EVENT_QUEUE {
                let Ok((n, from)) = self.udp[socket].try_recv_from(buf) else {
                    break;
                };
                if let Some(exit) = self.on_datagram(socket, &buf[..n], from) {
                    return exit;
                }
            }
        }
        Exit::Ended(EndReason::Bye)
    }

    async fn send_keepalive(&mut self) -> Option<Exit> {
        if self.pending_keepalive.is_some() {
            warn!(
                origin = self.conn.origin(),
                "previous keep-alive still unanswered"
            );
        }
        let req = Req::new(self.keepalive.clone(), &self.aggregate);
        match self.conn.send(&req).await {
            Ok(cseq) => {
                self.pending_keepalive = Some(cseq);
                None
            }
            Err(e) => Some(Exit::Ended(EndReason::Failed(e))),
        }
    }

    async fn on_response(&mut self, r: Response<Vec<u8>>) -> Option<Exit> {
        if self.pending_keepalive.is_none() || response_cseq(&r) != self.pending_keepalive {
            debug!(
                origin = self.conn.origin(),
                status = u16::from(r.status()),
                "unexpected response"
            );
            return None;
        }
        self.pending_keepalive = None;
        let status = u16::from(r.status());
        match status {
            200..=299 => self.keepalive_reauthorized = false,
            // A Digest nonce can expire during a long session: answer anew, once.
            401 if !self.keepalive_reauthorized && self.conn.accept_challenge(&r) => {
                self.keepalive_reauthorized = true;
                return self.send_keepalive().await;
            }
            405 | 501 | 551 if self.keepalive == Method::GetParameter => {
                debug!(
                    origin = self.conn.origin(),
                    status, "GET_PARAMETER refused: keep-alive by OPTIONS"
                );
                self.keepalive = Method::Options;
            }
            _ => {
                let method = method_name(&self.keepalive);
                let error = self.conn.expect_success(&self.keepalive, r).err()?;
                if status == 454 || status == 401 {
                    return Some(Exit::Ended(EndReason::Failed(error)));
                }
                warn!(
                    origin = self.conn.origin(),
                    method, status, "keep-alive refused"
                );
            }
        }
        None
    }

    async fn housekeeping(&mut self) -> Option<Exit> {
        if self.last_media.elapsed() >= MEDIA_STALL {
            return Some(Exit::Ended(EndReason::Failed(OriginError::NoMedia {
                origin: self.conn.origin().to_owned(),
                seconds: MEDIA_STALL.as_secs(),
            })));
        }
        if self.last_report.elapsed() >= REPORT_EVERY {
            return self.send_reports().await;
        }
        None
    }

    /// One receiver report per track, to the origin's RTCP port or channel.
    async fn send_reports(&mut self) -> Option<Exit> {
        self.last_report = Instant::now();
        for i in 0..self.tracks.len() {
            let blocks: Vec<ReportBlock> =
                self.tracks[i].stats.report_block().into_iter().collect();
            let report = build_receiver_report(self.ssrc, &blocks, CNAME);
            let track = &self.tracks[i];
            if let (Some(socket), Some(to)) = (self.udp.get(2 * i + 1), track.server_rtcp) {
                if let Err(e) = socket.send_to(&report, to).await {
                    debug!(origin = self.conn.origin(), error = %e, "RTCP report not sent");
                }
            } else if let Some((_, channel)) = track.channels {
                if let Err(e) = self.conn.send_interleaved(channel, &report).await {
                    return Some(Exit::Ended(EndReason::Failed(e)));
                }
            }
        }
        None
    }

    async fn teardown(&mut self) {
        let req = Req::new(Method::Teardown, &self.aggregate);
        match self.conn.request(&req, |_, _| {}).await {
            Ok(r) if r.status().is_success() => {
                info!(origin = self.conn.origin(), "origin session torn down")
            }
            Ok(r) => debug!(
                origin = self.conn.origin(),
                status = u16::from(r.status()),
                "TEARDOWN refused"
            ),
            Err(e) => debug!(origin = self.conn.origin(), error = %e, "TEARDOWN not answered"),
        }
    }

    /// A failure reported to `start` (before any media) as an error.
    fn as_error(&self, reason: EndReason) -> OriginError {
        match reason {
            EndReason::Failed(e) => e,
            EndReason::Eof => OriginError::Io {
                origin: self.conn.origin().to_owned(),
                kind: std::io::ErrorKind::UnexpectedEof,
                message: "closed by the origin before any media".into(),
            },
            EndReason::Bye => {
                OriginError::protocol(self.conn.origin(), "RTCP BYE before any media")
            }
        }
    }
}
