//! A scripted player for `cache_playback.rs`: RTP/AVP/TCP interleaved,
//! channels 2i/2i+1 for track i, recording when each packet arrived.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use crate::support::*;

/// One interleaved packet as it arrived.
#[derive(Debug)]
pub struct Packet {
    pub track: usize,
    pub rtcp: bool,
    pub data: Vec<u8>,
    pub at: Instant,
}

impl Packet {
    pub fn rtp(&self) -> Option<Rtp<'_>> {
        if self.rtcp {
            None
        } else {
            Rtp::parse(&self.data)
        }
    }

    /// Whether this compound RTCP packet holds a BYE.
    pub fn is_bye(&self) -> bool {
        let d = &self.data;
        let mut at = 0;
        while self.rtcp && at + 4 <= d.len() {
            if d[at + 1] == 203 {
                return true;
            }
            at += 4 * (usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]])) + 1);
        }
        false
    }
}

/// Where a PLAY response says each track starts.
#[derive(Clone, Copy, Debug)]
pub struct TrackStart {
    pub seq: u16,
    pub rtptime: u32,
}

/// What a PLAY response says.
#[derive(Debug)]
pub struct Played {
    /// Start of the `Range` answer, seconds.
    pub start: f64,
    /// The `Range` answer as sent.
    pub range: String,
    /// Per track, from `RTP-Info`.
    pub tracks: BTreeMap<usize, TrackStart>,
}

pub struct Player {
    pub conn: RtspConn,
    pub url: String,
    pub cseq: u32,
    pub session: Option<String>,
    pub track_urls: Vec<String>,
    pub clock_rates: Vec<u32>,
    /// Packets that arrived while waiting for a response.
    pub queued: VecDeque<Packet>,
}

impl Player {
    pub fn connect(proxy: &Proxy, url: &str) -> Player {
        Player {
            conn: RtspConn::connect(proxy.port()),
            url: url.to_string(),
            cseq: 0,
            session: None,
            track_urls: Vec::new(),
            clock_rates: Vec::new(),
            queued: VecDeque::new(),
        }
    }

    /// Sends a request (with the session, once there is one) and reads its
    /// response; packets that arrive first are kept for [`Player::next`].
    pub fn send(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RtspMessage {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(session) = &self.session {
            req += &format!("Session: {session}\r\n");
        }
        for (name, value) in headers {
            req += &format!("{name}: {value}\r\n");
        }
        req += "User-Agent: streamcache-tests\r\n\r\n";
        self.conn.send_raw(req.as_bytes()).unwrap();
        self.conn.set_read_timeout(Duration::from_secs(10));
        loop {
            match self.conn.read() {
                Ok(Received::Message(m)) if m.status() != 0 => {
                    assert_eq!(
                        m.header("CSeq").map(str::trim),
                        Some(self.cseq.to_string().as_str()),
                        "{m:?}"
                    );
                    return m;
                }
                Ok(Received::Message(_)) => {}
                Ok(Received::Interleaved { channel, data }) => {
                    self.queued.push_back(packet(channel, data));
                }
                Err(e) => panic!("response to {method} {url}: {e}"),
            }
        }
    }

    pub fn describe(&mut self, headers: &[(&str, &str)]) -> RtspMessage {
        let url = self.url.clone();
        let resp = self.send("DESCRIBE", &url, headers);
        if resp.status() == 200 {
            self.track_urls = resp.sdp_track_urls(&url);
            self.clock_rates = clock_rates(&resp.body_text());
            assert_eq!(self.track_urls.len(), 2, "{resp:?}");
            assert_eq!(self.clock_rates.len(), 2, "{resp:?}");
        }
        resp
    }

    pub fn setup_all(&mut self, headers: &[(&str, &str)]) {
        for (i, url) in self.track_urls.clone().iter().enumerate() {
            let transport = format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1);
            let mut h = vec![("Transport", transport.as_str())];
            h.extend_from_slice(headers);
            let resp = self.send("SETUP", url, &h);
            assert_eq!(resp.status(), 200, "SETUP {url}: {resp:?}");
            self.session = resp.session().map(String::from);
        }
    }

    /// PLAY (with a `Range` if given); asserts 200 and reads the answer.
    pub fn play(&mut self, range: Option<&str>) -> Played {
        let url = self.url.clone();
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        let resp = self.send("PLAY", &url, &headers);
        assert_eq!(resp.status(), 200, "PLAY {range:?}: {resp:?}");
        let range = resp
            .header("Range")
            .expect("PLAY answers a Range")
            .to_string();
        let start = range
            .strip_prefix("npt=")
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Range answer {range:?}"));
        let rtp_info = resp.header("RTP-Info").expect("PLAY answers RTP-Info");
        let mut tracks = BTreeMap::new();
        for entry in rtp_info.split(',') {
            let field = |name: &str| {
                entry
                    .split(';')
                    .find_map(|f| f.trim().strip_prefix(name))
                    .map(str::to_string)
            };
            let url = field("url=").unwrap_or_else(|| panic!("RTP-Info {rtp_info:?}"));
            let track = self
                .track_urls
                .iter()
                .position(|t| t.trim_end_matches('/') == url.trim_end_matches('/'))
                .unwrap_or_else(|| panic!("RTP-Info names {url}, not a track"));
            let start = TrackStart {
                seq: field("seq=").and_then(|s| s.parse().ok()).expect("seq"),
                rtptime: field("rtptime=")
                    .and_then(|s| s.parse().ok())
                    .expect("rtptime"),
            };
            tracks.insert(track, start);
        }
        assert_eq!(tracks.len(), 2, "RTP-Info {rtp_info:?}");
        Played {
            start,
            range,
            tracks,
        }
    }

    /// The next packet, or `None` when nothing arrives within `limit` (or
    /// the connection closed).
    pub fn next(&mut self, limit: Duration) -> Option<Packet> {
        if let Some(p) = self.queued.pop_front() {
            return Some(p);
        }
        self.conn
            .set_read_timeout(limit.max(Duration::from_millis(1)));
        loop {
            match self.conn.read() {
                Ok(Received::Interleaved { channel, data }) => return Some(packet(channel, data)),
                Ok(Received::Message(_)) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("reading packets: {e}"),
            }
        }
    }

    /// Every packet until `until`.
    pub fn read_until(&mut self, until: Instant) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(p) => got.push(p),
                None => break,
            }
        }
        got
    }

    /// Reads until every track got an RTCP BYE (true) or the connection
    /// closed after one; false if `limit` passed first.
    pub fn read_until_bye(&mut self, limit: Duration) -> bool {
        self.read_packets_until_bye(limit).1
    }

    pub fn read_packets_until_bye(&mut self, limit: Duration) -> (Vec<Packet>, bool) {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut byes = [false; 2];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(p) = self.next(left) else {
                // Closed (a relay closes after its BYEs) or timed out.
                return (got, byes.iter().any(|b| *b));
            };
            if p.is_bye() && p.track < 2 {
                byes[p.track] = true;
            }
            got.push(p);
            if byes.iter().all(|b| *b) {
                return (got, true);
            }
        }
        (got, false)
    }

    /// Media time (s) of an RTP packet of `track`, from the PLAY answer.
    pub fn media_time(&self, played: &Played, track: usize, timestamp: u32) -> f64 {
        let ticks = timestamp.wrapping_sub(played.tracks[&track].rtptime) as i32;
        played.start + f64::from(ticks) / f64::from(self.clock_rates[track])
    }
}

pub fn packet(channel: u8, data: Vec<u8>) -> Packet {
    Packet {
        track: usize::from(channel / 2),
        rtcp: channel % 2 == 1,
        data,
        at: Instant::now(),
    }
}

/// The clock rate of each media section (`a=rtpmap:PT NAME/RATE[/CH]`).
pub fn clock_rates(sdp: &str) -> Vec<u32> {
    let mut rates = Vec::new();
    let mut in_media = false;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            in_media = true;
        } else if let (true, Some(map)) = (in_media, line.strip_prefix("a=rtpmap:")) {
            let rate = map.split('/').nth(1).and_then(|r| r.trim().parse().ok());
            rates.push(rate.unwrap_or_else(|| panic!("rtpmap {map:?}")));
        }
    }
    rates
}

/// Per track: the last RTP packet's (seq, timestamp, ssrc).
pub fn last_rtp(packets: &[Packet]) -> BTreeMap<usize, (u16, u32, u32)> {
    let mut last = BTreeMap::new();
    for p in packets {
        if let Some(rtp) = p.rtp() {
            last.insert(p.track, (rtp.sequence, rtp.timestamp, rtp.ssrc));
        }
    }
    last
}

/// Reads until every track has an RTP packet; returns all packets read.
pub fn read_first_of_each(player: &mut Player) -> Vec<Packet> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while last_rtp(&got).len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = player
            .next(left)
            .unwrap_or_else(|| panic!("no packet of every track; got {got:?}"));
        got.push(p);
    }
    got
}

pub fn first_rtp(packets: &[Packet], track: usize) -> Rtp<'_> {
    packets
        .iter()
        .filter(|p| p.track == track)
        .find_map(|p| p.rtp())
        .unwrap_or_else(|| panic!("no RTP packet of track {track}"))
}

/// Whether `a` is `b` with some frames cut off its front.
pub fn is_suffix(a: &[String], b: &[String]) -> bool {
    !a.is_empty() && a.len() <= b.len() && b[b.len() - a.len()..] == *a
}
