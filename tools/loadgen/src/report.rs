//! Sums the sessions of a run into the figures printed at the end, as text
//! or JSON. Every figure is defined in the field docs below and in
//! `tools/loadgen/README.md`.

use crate::histogram::Histogram;
use crate::session::{SessionResult, Transport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The presentation URL.
    pub url: String,
    /// Player sessions ramped up (the late joiner not included).
    pub players: usize,
    /// Sessions started per second during the ramp.
    pub ramp_per_sec: f64,
    /// Seconds all players played together after the ramp.
    pub duration_secs: f64,
    /// How the players received the media (`tcp` or `udp`).
    pub transport: Transport,
    /// Over UDP: each socket's receive buffer as the kernel granted it
    /// (`SO_RCVBUF` read back, which the kernel doubles), bytes.
    pub udp_receive_buffer: Option<usize>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the run was set up.
    pub run: RunInfo,
    /// Set-up outcomes of the ramped sessions.
    pub sessions: Sessions,
    /// What the established ramped sessions received.
    pub traffic: Traffic,
    /// Sequence-number loss over every track of every ramped session.
    pub loss: Loss,
    /// Time from writing PLAY to the first RTP packet, ms, over the ramped
    /// sessions that received one.
    pub first_packet_ms: Option<Quantiles>,
    /// Pacing error at the player, ms: lateness of each RTP packet against
    /// the running-minimum transit offset of its track (see `track.rs`), over
    /// every packet of every track of every ramped session.
    pub pacing_error_ms: Option<Quantiles>,
    /// How many ramped sessions started on a random-access point.
    pub first_video_rap: RapCount,
    /// The extra session started after the others, if asked for.
    pub late_joiner: Option<LateJoiner>,
    /// One line per ramped session, in start order.
    pub per_session: Vec<PerSession>,
}

/// Set-up outcomes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sessions {
    /// Sessions started.
    pub attempted: usize,
    /// Sessions whose PLAY was answered 2xx.
    pub established: usize,
    /// Sessions that were not established.
    pub failed: usize,
    /// Failures by reason (`"DESCRIBE: 404 Not Found"`, `"connect: …"`).
    pub failures: BTreeMap<String, usize>,
    /// Established sessions that stopped before the end of the run.
    pub ended_early: usize,
    /// Those by reason.
    pub ended_early_reasons: BTreeMap<String, usize>,
    /// `GET_PARAMETER` keep-alives sent.
    pub keepalives_sent: u64,
    /// Keep-alives answered with a non-2xx status.
    pub keepalive_errors: u64,
}

/// Received traffic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    /// RTP packets received.
    pub rtp_packets: u64,
    /// Bytes of those RTP packets (RTP header included, 4-byte `$` framing
    /// not).
    pub rtp_bytes: u64,
    /// RTCP packets received.
    pub rtcp_packets: u64,
    /// Frames on an RTP channel that were not RTP.
    pub malformed: u64,
    /// Sum over sessions of each one's RTP bit rate (its bytes over the time
    /// from its first RTP packet to the end of its receiving), Mbit/s: the
    /// rate delivered while all play together.
    pub mbit_per_s: f64,
    /// Spread of the per-session rate, Mbit/s.
    pub per_session_mbit_per_s: Option<Spread>,
}

/// Sequence-number loss.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loss {
    /// Packets missing from the sequence (RFC 3550 §6.4.1), all tracks.
    pub lost_packets: u64,
    /// Forward jumps of the sequence number by more than one.
    pub gaps: u64,
    /// `lost / (lost + received)`.
    pub ratio: f64,
    /// Over UDP: datagrams the kernel dropped because a player's own socket
    /// buffer was full (part of `lost_packets` when on an RTP socket), summed
    /// over the sessions that could read it; `None` over TCP.
    pub udp_socket_drops: Option<u64>,
}

/// Quantiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Number of values.
    pub samples: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Quantiles {
    /// From a histogram of microseconds; `None` if it is empty.
    pub fn from_micros(h: &Histogram) -> Option<Self> {
        let ms = |q: f64| h.quantile(q).map(|us| us as f64 / 1000.0);
        Some(Quantiles {
            samples: h.count(),
            p50: ms(0.5)?,
            p90: ms(0.9)?,
            p99: ms(0.99)?,
            max: h.max() as f64 / 1000.0,
        })
    }
}

/// Smallest, median and largest of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (the lower middle for an even count).
    pub p50: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        values.sort_by(f64::total_cmp);
        Some(Spread {
            min: *values.first()?,
            p50: values[(values.len() - 1) / 2],
            max: *values.last()?,
        })
    }
}

/// First-video-packet random-access count.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RapCount {
    /// Sessions that received an H.264/H.265 video packet.
    pub sessions_with_video: usize,
    /// Of those, sessions whose first video packet was a random-access point.
    pub first_packet_rap: usize,
    /// Of those, sessions whose first video frame (the packets sharing the
    /// first video packet's RTP timestamp) held a random-access point.
    pub first_frame_rap: usize,
}

/// The late joiner's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LateJoiner {
    /// Why it was not established, if it was not.
    pub failure: Option<String>,
    /// PLAY sent → first RTP packet, ms.
    pub first_packet_ms: Option<f64>,
    /// PLAY sent → first video packet, ms.
    pub first_video_ms: Option<f64>,
    /// Whether the first video packet was a random-access point.
    pub first_video_is_rap: Option<bool>,
    /// Whether the first video frame held a random-access point.
    pub first_frame_is_rap: Option<bool>,
    /// PLAY sent → first random-access video packet, ms.
    pub first_rap_ms: Option<f64>,
    /// RTP packets it received.
    pub rtp_packets: u64,
    /// Packets missing from its sequences.
    pub lost_packets: u64,
}

/// One ramped session.
#[derive(Debug, Clone, Serialize)]
pub struct PerSession {
    /// Why it was not established, if it was not.
    pub failure: Option<String>,
    /// Why it ended before the end of the run, if it did.
    pub ended_early: Option<String>,
    /// RTP bytes received.
    pub rtp_bytes: u64,
    /// RTP packets received.
    pub rtp_packets: u64,
    /// Packets missing from its sequences.
    pub lost_packets: u64,
    /// PLAY sent → first RTP packet, ms.
    pub first_packet_ms: Option<f64>,
    /// PLAY sent → first random-access video packet (the first keyframe a
    /// decoder can start at), ms.
    pub first_rap_ms: Option<f64>,
    /// Its RTP bit rate, Mbit/s.
    pub mbit_per_s: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn mbit_per_s(r: &SessionResult) -> f64 {
    let secs = r.receiving.as_secs_f64();
    if secs > 0.0 {
        r.bytes() as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    }
}

impl Report {
    /// Sums the ramped sessions and the late joiner into a report.
    pub fn build(run: RunInfo, sessions: &[SessionResult], late: Option<&SessionResult>) -> Self {
        let mut s = Sessions {
            attempted: sessions.len(),
            ..Sessions::default()
        };
        let mut traffic = Traffic::default();
        let mut loss = Loss::default();
        let mut first_packet = Histogram::default();
        let mut pacing = Histogram::default();
        let mut rap = RapCount::default();
        let mut rates = Vec::new();
        for r in sessions {
            if let Some(f) = &r.failure {
                s.failed += 1;
                *s.failures.entry(f.clone()).or_default() += 1;
                continue;
            }
            s.established += 1;
            if let Some(e) = &r.ended_early {
                s.ended_early += 1;
                *s.ended_early_reasons.entry(e.clone()).or_default() += 1;
            }
            s.keepalives_sent += u64::from(r.keepalives);
            s.keepalive_errors += u64::from(r.keepalive_errors);
            for t in &r.tracks {
                traffic.rtp_packets += t.stats.packets;
                traffic.rtp_bytes += t.stats.bytes;
                traffic.rtcp_packets += t.stats.rtcp_packets;
                traffic.malformed += t.stats.malformed;
                loss.lost_packets += t.stats.lost();
                loss.gaps += t.stats.gaps();
                pacing.merge(&t.stats.pacing_us);
            }
            if let Some(d) = r.first_packet {
                first_packet.record(micros(d));
            }
            if let Some(v) = r.first_video {
                rap.sessions_with_video += 1;
                rap.first_packet_rap += usize::from(v.packet_rap);
                rap.first_frame_rap += usize::from(v.frame_rap);
            }
            if let Some(d) = r.udp_drops {
                *loss.udp_socket_drops.get_or_insert(0) += d;
            }
            rates.push(mbit_per_s(r));
        }
        traffic.mbit_per_s = rates.iter().fold(0.0, |sum, r| sum + r);
        traffic.per_session_mbit_per_s = Spread::of(rates);
        let seen = loss.lost_packets + traffic.rtp_packets;
        if seen > 0 {
            loss.ratio = loss.lost_packets as f64 / seen as f64;
        }
        Report {
            run,
            sessions: s,
            traffic,
            loss,
            first_packet_ms: Quantiles::from_micros(&first_packet),
            pacing_error_ms: Quantiles::from_micros(&pacing),
            first_video_rap: rap,
            late_joiner: late.map(LateJoiner::from_result),
            per_session: sessions.iter().map(PerSession::from_result).collect(),
        }
    }

    /// The report as a few lines of text (per-session lines left out).
    pub fn human(&self) -> String {
        let mut o = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_human(&mut o);
        o
    }

    fn write_human(&self, o: &mut String) -> fmt::Result {
        let (run, s, t, l) = (&self.run, &self.sessions, &self.traffic, &self.loss);
        write!(
            o,
            "{}: {} players ramped at {}/s, then {} s together; over {}",
            run.url,
            run.players,
            run.ramp_per_sec,
            run.duration_secs,
            match run.transport {
                Transport::Tcp => "TCP interleaved",
                Transport::Udp => "UDP",
            }
        )?;
        match run.udp_receive_buffer {
            Some(b) => writeln!(o, " (socket receive buffers {} KiB)", b / 1024)?,
            None => writeln!(o)?,
        }
        writeln!(
            o,
            "sessions       {} established, {} failed, {} ended early; {} keep-alives ({} refused)",
            s.established, s.failed, s.ended_early, s.keepalives_sent, s.keepalive_errors
        )?;
        for (why, n) in &s.failures {
            writeln!(o, "  failed       {n} × {why}")?;
        }
        for (why, n) in &s.ended_early_reasons {
            writeln!(o, "  ended early  {n} × {why}")?;
        }
        write!(
            o,
            "delivered      {:.1} Mbit/s in total; {} RTP packets, {:.1} MB, {} RTCP",
            t.mbit_per_s,
            t.rtp_packets,
            t.rtp_bytes as f64 / 1e6,
            t.rtcp_packets
        )?;
        if let Some(sp) = t.per_session_mbit_per_s {
            write!(
                o,
                "; per session min {:.2} / p50 {:.2} / max {:.2} Mbit/s",
                sp.min, sp.p50, sp.max
            )?;
        }
        writeln!(o)?;
        write!(
            o,
            "loss           {} packets ({:.4} %), {} gaps",
            l.lost_packets,
            l.ratio * 100.0,
            l.gaps,
        )?;
        if t.malformed > 0 {
            write!(o, ", {} malformed", t.malformed)?;
        }
        match l.udp_socket_drops {
            Some(d) => writeln!(o, "; {d} datagrams dropped by the players' own sockets")?,
            None => writeln!(o)?,
        }
        writeln!(
            o,
            "first packet   {} (PLAY sent → first RTP packet)",
            quantiles_text(self.first_packet_ms)
        )?;
        writeln!(
            o,
            "pacing error   {} (lateness vs. RTP timestamps)",
            quantiles_text(self.pacing_error_ms)
        )?;
        writeln!(
            o,
            "first video    {} of {} sessions' first packet was a random-access point, {} their first frame",
            self.first_video_rap.first_packet_rap,
            self.first_video_rap.sessions_with_video,
            self.first_video_rap.first_frame_rap
        )?;
        if let Some(j) = &self.late_joiner {
            match &j.failure {
                Some(f) => writeln!(o, "late joiner    failed: {f}")?,
                None => writeln!(
                    o,
                    "late joiner    first packet {}, first video packet {} (random-access point: packet {}, frame {}), first random-access point {}; {} packets, {} lost",
                    opt_ms(j.first_packet_ms),
                    opt_ms(j.first_video_ms),
                    yes_no(j.first_video_is_rap),
                    yes_no(j.first_frame_is_rap),
                    opt_ms(j.first_rap_ms),
                    j.rtp_packets,
                    j.lost_packets,
                )?,
            }
        }
        Ok(())
    }
}

fn quantiles_text(q: Option<Quantiles>) -> String {
    q.map_or("-".into(), |q| {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            q.p50, q.p90, q.p99, q.max, q.samples
        )
    })
}

fn yes_no(v: Option<bool>) -> &'static str {
    v.map_or("-", |r| if r { "yes" } else { "no" })
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

impl LateJoiner {
    fn from_result(r: &SessionResult) -> Self {
        LateJoiner {
            failure: r.failure.clone(),
            first_packet_ms: r.first_packet.map(ms),
            first_video_ms: r.first_video.map(|v| ms(v.after)),
            first_video_is_rap: r.first_video.map(|v| v.packet_rap),
            first_frame_is_rap: r.first_video.map(|v| v.frame_rap),
            first_rap_ms: r.first_rap.map(ms),
            rtp_packets: r.packets(),
            lost_packets: r.lost(),
        }
    }
}

impl PerSession {
    fn from_result(r: &SessionResult) -> Self {
        PerSession {
            failure: r.failure.clone(),
            ended_early: r.ended_early.clone(),
            rtp_bytes: r.bytes(),
            rtp_packets: r.packets(),
            lost_packets: r.lost(),
            first_packet_ms: r.first_packet.map(ms),
            first_rap_ms: r.first_rap.map(ms),
            mbit_per_s: mbit_per_s(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{FirstVideo, Track};
    use crate::track::TrackStats;
    use std::time::Instant;
    use streamcache_rtsp::rtp::Codec;

    fn rtp(sequence: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0; 113]); // 125 bytes in all
        p
    }

    fn session(sequences: &[u16], first_ms: u64, rap: bool) -> SessionResult {
        let mut stats = TrackStats::new(None);
        for &s in sequences {
            stats.on_rtp(&rtp(s), Instant::now());
        }
        SessionResult {
            tracks: vec![Track {
                kind: "video".into(),
                codec: Codec::H264,
                stats,
            }],
            first_packet: Some(Duration::from_millis(first_ms)),
            first_video: Some(FirstVideo {
                after: Duration::from_millis(first_ms),
                packet_rap: rap,
                timestamp: 0,
                frame_rap: true,
            }),
            receiving: Duration::from_secs(1),
            ..SessionResult::default()
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            url: "rtsp://127.0.0.1:8554/x".into(),
            players: 3,
            ramp_per_sec: 10.0,
            duration_secs: 1.0,
            transport: Transport::Tcp,
            udp_receive_buffer: None,
        }
    }

    #[test]
    fn sums_sessions() {
        let failed = SessionResult {
            failure: Some("DESCRIBE: 404 Not Found".into()),
            ..SessionResult::default()
        };
        let sessions = [
            session(&[1, 2, 3, 4], 10, true),
            session(&[1, 2, 4], 30, false),
            failed,
        ];
        let r = Report::build(run(), &sessions, None);
        assert_eq!((r.sessions.established, r.sessions.failed), (2, 1));
        assert_eq!(r.sessions.failures["DESCRIBE: 404 Not Found"], 1);
        assert_eq!(r.traffic.rtp_packets, 7);
        assert_eq!(r.traffic.rtp_bytes, 7 * 125);
        // 4 × 125 B and 3 × 125 B, each over one second.
        assert!((r.traffic.mbit_per_s - 7.0 * 1000.0 / 1e6).abs() < 1e-9);
        assert_eq!((r.loss.lost_packets, r.loss.gaps), (1, 1));
        assert!((r.loss.ratio - 1.0 / 8.0).abs() < 1e-9);
        let fp = r.first_packet_ms.unwrap();
        assert_eq!((fp.samples, fp.max), (2, 30.0));
        // Within the histogram's 1/64 bucket precision.
        assert!(
            fp.p50 >= 10.0 && fp.p50 <= 10.0 * (1.0 + 1.0 / 64.0),
            "{fp:?}"
        );
        assert_eq!(r.first_video_rap.sessions_with_video, 2);
        assert_eq!(r.first_video_rap.first_packet_rap, 1);
        assert_eq!(r.first_video_rap.first_frame_rap, 2);
        assert_eq!(r.per_session.len(), 3);
        let text = r.human();
        assert!(text.contains("2 established, 1 failed"), "{text}");
        assert!(text.contains("1 × DESCRIBE: 404 Not Found"), "{text}");
        assert!(text.contains("over TCP interleaved\n"), "{text}");
        assert!(!text.contains("dropped by"), "{text}");
        assert!(r.loss.udp_socket_drops.is_none());
    }

    #[test]
    fn sums_udp_socket_drops() {
        let mut a = session(&[1, 2, 4], 10, true);
        a.udp_drops = Some(1);
        let mut b = session(&[1, 2, 3], 10, true);
        b.udp_drops = Some(0);
        let info = RunInfo {
            transport: Transport::Udp,
            udp_receive_buffer: Some(8 << 20),
            ..run()
        };
        let r = Report::build(info, &[a, b], None);
        assert_eq!(r.loss.udp_socket_drops, Some(1));
        let text = r.human();
        assert!(
            text.contains("over UDP (socket receive buffers 8192 KiB)"),
            "{text}"
        );
        assert!(
            text.contains("1 datagrams dropped by the players' own sockets"),
            "{text}"
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["run"]["transport"], "udp");
        assert_eq!(v["loss"]["udp_socket_drops"], 1);
    }

    #[test]
    fn json_has_the_figures() {
        let late = session(&[7, 8], 5, true);
        let r = Report::build(run(), &[session(&[1], 1, false)], Some(&late));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["sessions"]["established"], 1);
        assert_eq!(v["late_joiner"]["first_video_is_rap"], true);
        assert_eq!(v["late_joiner"]["first_packet_ms"], 5.0);
        assert!(v["pacing_error_ms"].is_null());
    }

    #[test]
    fn spread_takes_lower_middle() {
        let s = Spread::of(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.p50, s.max), (1.0, 2.0, 4.0));
        assert!(Spread::of(Vec::new()).is_none());
    }
}
