#!/usr/bin/python3
"""A GStreamer RTSP relay: the yardstick streamcache's live fan-out is measured against.

rtspsrc pulls one upstream URL (over TCP) into one *shared* gst-rtsp-server
media, which every client of `/relay` plays: one upstream session however
many players, as streamcache's hub does. H.264 + AAC (RFC 3640) only, the
test origin's /live (tests/peers/origin.py). gst-rtsp-server needs its
payloaders to be named `payN`, so each track is depayloaded and payloaded
again (rtph264depay ! rtph264pay, rtpmp4gdepay ! rtpmp4gpay): that is how
a GStreamer relay is built (gst-rtsp-server's test-launch with rtspsrc).

Run with /usr/bin/python3. Prints `READY port=N` once it listens; exits on
SIGTERM/SIGINT, or at end of stdin with --watch-stdin.
"""

import argparse
import os
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def relay_launch(upstream):
    url = upstream.replace("\\", "\\\\").replace('"', '\\"')
    # latency=200: the jitter buffer's delay (it costs no CPU); rtspsrc's
    # pads are linked by caps once the upstream SDP is known.
    return (
        f'( rtspsrc location="{url}" protocols=tcp latency=200 name=src '
        "src. ! application/x-rtp,media=video ! rtph264depay "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 "
        "src. ! application/x-rtp,media=audio ! rtpmp4gdepay "
        "! rtpmp4gpay name=pay1 pt=97 )"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="RTSP port (0: any free one)")
    parser.add_argument("--address", default="127.0.0.1", help="listen address")
    parser.add_argument("--upstream", required=True, help="rtsp:// URL to relay")
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog")
    parser.add_argument("--watch-stdin", action="store_true", help="exit at end of stdin")
    args = parser.parse_args()
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    server.set_backlog(args.backlog)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(relay_launch(args.upstream))
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    # The 1.22 deadlock of shared live media on many PLAYs (TESTING.md).
    factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    server.get_mount_points().add_factory("/relay", factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.exit(f"relay.py: cannot listen on {args.address}:{args.port}")

    def stop(_name):
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop, "TERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop, "INT")
    if args.watch_stdin:
        GLib.io_add_watch(
            GLib.IOChannel.unix_new(sys.stdin.fileno()),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            lambda *_: stop("stdin-eof") if not sys.stdin.buffer.raw.read(4096) else True,
        )
    print(f"READY port={server.get_bound_port()}", flush=True)
    loop.run()
    # gst-rtsp-server can wedge tearing shared media down (TESTING.md).
    watchdog = threading.Timer(5.0, lambda: os._exit(0))
    watchdog.daemon = True
    watchdog.start()
    server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)


if __name__ == "__main__":
    main()
