//! HLS playlists (RFC 8216, version 7: fMP4 segments behind an
//! `EXT-X-MAP`), as text.

use std::fmt::Write as _;

use streamcache_types::Npt;

use super::title::Plan;

/// A live window's segment: its media sequence number and duration.
pub struct LiveEntry {
    pub sequence: u64,
    pub duration: Npt,
}

/// The VOD playlist of a stored title: every segment, then the end.
pub fn vod(plan: &Plan) -> String {
    let mut text = header(plan.target_duration(), 0, "VOD");
    let _ = writeln!(text, "#EXT-X-MAP:URI=\"init.mp4\"");
    for (n, span) in plan.segments.iter().enumerate() {
        extinf(&mut text, span.end.saturating_sub(span.start));
        let _ = writeln!(text, "seg/{n}.m4s");
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

/// A live title's sliding playlist: the window's segments, no end.
pub fn live(entries: &[LiveEntry], target: u64) -> String {
    let first = entries.first().map_or(0, |e| e.sequence);
    let mut text = header(target, first, "");
    let _ = writeln!(text, "#EXT-X-MAP:URI=\"live/init.mp4\"");
    for e in entries {
        extinf(&mut text, e.duration);
        let _ = writeln!(text, "live/{}.m4s", e.sequence);
    }
    text
}

fn header(target: u64, sequence: u64, kind: &str) -> String {
    let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{sequence}");
    if !kind.is_empty() {
        let _ = writeln!(text, "#EXT-X-PLAYLIST-TYPE:{kind}");
    }
    text
}

fn extinf(text: &mut String, duration: Npt) {
    let _ = writeln!(text, "#EXTINF:{:.6},", duration.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_playlist_starts_at_its_first_sequence() {
        let entries = [
            LiveEntry {
                sequence: 7,
                duration: Npt::from_millis(2000),
            },
            LiveEntry {
                sequence: 8,
                duration: Npt::from_millis(2040),
            },
        ];
        let text = live(&entries, 3);
        assert!(text.contains("#EXT-X-VERSION:7\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"));
        assert!(text.contains("#EXT-X-TARGETDURATION:3\n"));
        assert!(text.contains("#EXTINF:2.040000,\nlive/8.m4s\n"));
        assert!(!text.contains("ENDLIST"));
    }
}
