//! A first run (issue 11, item 1): the shipped configuration,
//! `etc/streamcache.toml`, changed only in its addresses and cache
//! directory, plays something with nothing else installed. Its built-in
//! sample origin serves the embedded clip; `/demo/vod` plays twice with
//! ffprobe, the first time fetched from the sample origin (`cache=miss`),
//! the second from the store (`cache=hit`, `cache ls` says `complete`), and
//! `/demo/live` plays too. No GStreamer process is involved: this file
//! starts none.
//!
//! The sample origin keeps the file's port (8654): the mounts name it.

mod support;

use std::fs;
use std::time::Duration;

use support::*;

/// Video frames of the sample clip: 10 s at 25 fps.
const CLIP_VIDEO_FRAMES: u64 = 250;

fn shipped_config(cache: &std::path::Path) -> String {
    let text = fs::read_to_string(repo_root().join("etc/streamcache.toml")).unwrap();
    let changed = text
        .replace("listen = \"127.0.0.1:8554\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:8555\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "dir = \"var/cache\"",
            &format!("dir = {}", toml::Value::String(cache.display().to_string())),
        );
    assert_eq!(changed.matches("127.0.0.1:0").count(), 2, "{changed}");
    assert!(changed.contains(&cache.display().to_string()));
    changed
}

#[test]
fn the_shipped_configuration_plays_the_sample_twice_the_second_from_the_store() {
    require_peers();
    let dir = temp_dir();
    let cache = dir.path().join("cache");
    let proxy = Proxy::start(&shipped_config(&cache));
    let vod = proxy.url("/demo/vod");

    let first = ffprobe_count_frames(&vod, "tcp", None);
    assert_eq!(first.video, CLIP_VIDEO_FRAMES, "first play: {first:?}");
    assert!(first.audio > 0, "first play: {first:?}");
    assert!(
        proxy.wait_log("cache=miss", Duration::from_secs(5)),
        "{}",
        proxy.logs()
    );
    proxy.wait_cached(&vod, Duration::from_secs(30));

    let second = ffprobe_count_frames(&vod, "tcp", None);
    assert_eq!(
        (second.video, second.audio),
        (first.video, first.audio),
        "the second play: {second:?}"
    );
    assert!(
        proxy.wait_log("cache=hit", Duration::from_secs(5)),
        "{}",
        proxy.logs()
    );

    let config = dir.path().join("streamcache.toml");
    fs::write(&config, shipped_config(&cache)).unwrap();
    let ls = run_streamcache(&["cache", "--config", config.to_str().unwrap(), "ls"]);
    assert!(ls.success(), "{ls:?}");
    let line = ls
        .stdout
        .lines()
        .find(|l| l.contains("rtsp://127.0.0.1:8654/vod"))
        .unwrap_or_else(|| panic!("the sample title is not listed: {ls:?}"));
    assert!(line.contains("complete"), "{line}");

    let live = ffprobe_count_video_frames(&proxy.url("/demo/live"), "tcp", 3);
    assert!(live.video >= 25, "the live loop: {live:?}");
}
