#!/usr/bin/python3
"""A real third-party RTSP origin for streamcache's end-to-end tests.

GStreamer's RTSP server (gst-rtsp-server 1.22 through python3-gi) serving:

  /live  a shared live source: videotestsrc + timeoverlay -> x264 (~2 Mbit/s,
         keyframe every 25 frames = 1 s) and audiotestsrc -> AAC. One pipeline
         for every client, like a camera.
  /vod   the --media file (Matroska, H.264 + AAC; H.265 + AAC with
         --video-codec h265) on demand: one pipeline per client, seekable
         with Range.

Run with /usr/bin/python3 (it imports gi). Prints `READY port=N` once it
listens (N is the bound port, so `--port 0` works) and then one flushed line
per event, for the tests to count and inspect:

  ORIGIN client-connected ip=IP port=PORT client=ID
  ORIGIN request method=M uri=URI range=R transport=T auth=A session=S client=ID
  ORIGIN new-session id=SID client=ID
  ORIGIN session-removed id=SID
  ORIGIN client-closed client=ID
  ORIGIN stopping signal=TERM|INT|stdin-eof

With --udp-blackhole the origin accepts UDP SETUPs but sends the RTP/RTCP
to a socket pair of its own that nobody reads (the SETUP's client_port is
rewritten before the server sees it): the client's UDP ports stay silent, as
behind a firewall, which is how a UDP->TCP fallback is provoked.

With --cache-control VALUE and/or --last-modified HTTP-DATE, successful
DESCRIBE answers carry those headers (by default they carry neither, and
the origin never answers 304: a conditional DESCRIBE gets a full 200).

Values never contain spaces; an absent header is `-`. `auth` is the scheme of
the Authorization header (Basic/Digest) or `-`, never the credentials.
ID numbers the TCP connections from 1 in accept order.
"""

import argparse
import os
import signal
import socket
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

_print_lock = threading.Lock()


def log(*fields):
    """One event per line, flushed at once: the tests read our stdout live."""
    line = " ".join(str(f) for f in fields)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def clean(value):
    """A header value as one space-free token (`-` when absent)."""
    if value is None or value == "":
        return "-"
    return value.replace(" ", "%20")


def header(msg, field):
    res, value = msg.get_header(field, 0)
    return value if res == GstRtsp.RTSPResult.OK else None


def launch_quote(path):
    """Quote a file path for a gst-launch description."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def live_launch(audio_encoder):
    # ~2 Mbit/s of video for ~5% of a core: a scrolling SMPTE pattern saturates
    # x264's 2000 kbit/s rate control even at 320x240, so load tests move
    # realistic volumes without the origin eating the CI machine's 2 cores.
    # tune=zerolatency: no lookahead or B-frames, a camera-like stream.
    # config-interval=-1: SPS/PPS before every IDR (one a second), so a late
    # joiner can start decoding at any keyframe.
    return (
        "( videotestsrc is-live=true pattern=smpte horizontal-speed=4 "
        "! video/x-raw,width=320,height=240,framerate=25/1 "
        "! timeoverlay ! videoconvert "
        "! x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000 "
        "key-int-max=25 threads=1 "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 "
        "audiotestsrc is-live=true wave=sine freq=440 "
        "! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 "
        f"! {audio_encoder} bitrate=96000 ! aacparse "
        "! rtpmp4gpay name=pay1 pt=97 )"
    )


def vod_launch(media, video_codec="h264"):
    # No re-encoding: the payloaders carry the file's own access units, so a
    # pull decodes frame-identically to the file (TESTING.md). H.265 goes out
    # as RFC 7798 (rtph265pay: single NAL units, aggregation and
    # fragmentation units), its VPS/SPS/PPS in the SDP and before every IDR;
    # aggregate-mode=zero-latency bundles those parameter sets (and small
    # slices) into aggregation packets, so a pull sees all three packet
    # kinds. H.264 keeps rtph264pay's defaults (single NAL units and FU-A).
    aggregate = " aggregate-mode=zero-latency" if video_codec == "h265" else ""
    return (
        f"( filesrc location={launch_quote(media)} ! matroskademux name=demux "
        f"demux.video_0 ! queue ! {video_codec}parse "
        f"! rtp{video_codec}pay name=pay0 pt=96 config-interval=-1{aggregate} "
        "demux.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 )"
    )


def pick_aac_encoder():
    for name in ("avenc_aac", "voaacenc"):
        if Gst.ElementFactory.find(name) is not None:
            return name
    sys.exit("origin.py: no AAC encoder (avenc_aac or voaacenc); install gstreamer1.0-libav")


class Origin:
    def __init__(self, args):
        self.args = args
        self.next_client = 0
        self.blackholes = []  # sockets kept open (and unread) for --udp-blackhole
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(args.address)
        self.server.set_service(str(args.port))
        self.server.set_backlog(args.backlog)
        self.server.connect("client-connected", self.on_client_connected)
        self.server.get_session_pool().connect("session-removed", self.on_session_removed)

        protocols = GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP
        mounts = self.server.get_mount_points()

        live = GstRtspServer.RTSPMediaFactory()
        live.set_launch(live_launch(pick_aac_encoder()))
        live.set_shared(True)
        live.set_protocols(protocols)
        # gst-rtsp-server 1.22 can deadlock for good when many clients PLAY a
        # shared pipeline whose source claims to be seekable (a flushing seek
        # per PLAY). Publishing clock and offset makes the media non-seekable.
        live.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
        mounts.add_factory("/live", live)

        factories = [live]
        if args.media:
            vod = GstRtspServer.RTSPMediaFactory()
            vod.set_launch(vod_launch(args.media, args.video_codec))
            vod.set_shared(False)
            vod.set_protocols(protocols)
            mounts.add_factory("/vod", vod)
            factories.append(vod)
            # More titles of the same file, each a URL (a cache key) of its own.
            for name in filter(None, (args.titles or "").split(",")):
                title = GstRtspServer.RTSPMediaFactory()
                title.set_launch(vod_launch(args.media, args.video_codec))
                title.set_shared(False)
                title.set_protocols(protocols)
                mounts.add_factory("/vod/" + name, title)
                factories.append(title)

        if args.user is not None:
            self.protect(args, factories)

    def protect(self, args, factories):
        """Everything needs the one user's credentials; anonymous gets 401."""
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        if args.auth == "digest":
            auth.add_digest(args.user, args.password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            basic = GstRtspServer.RTSPAuth.make_basic(args.user, args.password)
            auth.add_basic(basic, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        self.server.set_auth(auth)
        role = Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        )
        for factory in factories:
            factory.add_role_from_structure(role)

    # --- logging hooks -------------------------------------------------------

    def on_client_connected(self, _server, client):
        self.next_client += 1
        cid = self.next_client
        conn = client.get_connection()
        ip = conn.get_ip()
        try:
            port = conn.get_read_socket().get_remote_address().get_port()
        except GLib.Error:
            port = "-"
        log("ORIGIN client-connected", f"ip={ip}", f"port={port}", f"client={cid}")

        def on_request(_client, ctx):
            req = ctx.request
            _res, method, uri, _version = req.parse_request()
            authz = header(req, GstRtsp.RTSPHeaderField.AUTHORIZATION)
            session = header(req, GstRtsp.RTSPHeaderField.SESSION)
            log(
                "ORIGIN request",
                f"method={GstRtsp.rtsp_method_as_text(method)}",
                f"uri={clean(uri)}",
                f"range={clean(header(req, GstRtsp.RTSPHeaderField.RANGE))}",
                f"transport={clean(header(req, GstRtsp.RTSPHeaderField.TRANSPORT))}",
                f"auth={clean(authz.split(' ', 1)[0] if authz else None)}",
                f"session={clean(session.split(';', 1)[0] if session else None)}",
                f"client={cid}",
            )
            return GstRtsp.RTSPStatusCode.OK

        # The pre-*-request signals fire before authentication and media
        # lookup, so refused requests are logged too.
        for name in (
            "options",
            "describe",
            "setup",
            "play",
            "pause",
            "teardown",
            "get-parameter",
            "set-parameter",
            "announce",
            "record",
        ):
            client.connect(f"pre-{name}-request", on_request)

        if self.args.udp_blackhole:
            client.connect("setup-request", lambda _c, ctx: self.blackhole_udp(ctx))

        if self.args.cache_control or self.args.last_modified:
            client.connect("send-message", lambda _c, _ctx, msg: self.add_cache_headers(msg))

        client.connect(
            "new-session",
            lambda _c, session: log("ORIGIN new-session", f"id={session.get_sessionid()}", f"client={cid}"),
        )
        client.connect("closed", lambda _c: log("ORIGIN client-closed", f"client={cid}"))

    def add_cache_headers(self, msg):
        """Adds --cache-control and --last-modified to successful DESCRIBE
        answers (the only answers with an SDP body). `send-message` fires
        just before a message goes out; its context argument does not reach
        Python in 1.22 (a type mismatch in the signal), the message does."""
        if msg is None or msg.get_type() != GstRtsp.RTSPMsgType.RESPONSE:
            return
        _res, code, _reason, _version = msg.parse_response()
        if code != GstRtsp.RTSPStatusCode.OK:
            return
        _res, content_type = msg.get_header(GstRtsp.RTSPHeaderField.CONTENT_TYPE, 0)
        if content_type != "application/sdp":
            return
        if self.args.cache_control:
            msg.add_header(GstRtsp.RTSPHeaderField.CACHE_CONTROL, self.args.cache_control)
        if self.args.last_modified:
            msg.add_header(GstRtsp.RTSPHeaderField.LAST_MODIFIED, self.args.last_modified)

    def blackhole_udp(self, ctx):
        """After a UDP SETUP and before PLAY adds the destination to the
        sender, points the stream's client_port at our own unread pair (the
        transport is changed in place: gst-rtsp-server 1.22 sends where it
        says when the PLAY activates it)."""
        trans = ctx.trans
        if trans is None:
            return
        transport = trans.get_transport()
        if transport.lower_transport != GstRtsp.RTSPLowerTrans.UDP:
            return
        ports = transport.client_port
        ports.min, ports.max = self.blackhole_pair()
        log("ORIGIN udp-blackhole", f"transport={clean(transport.as_text())}")

    def blackhole_pair(self):
        """An even/odd UDP port pair bound here and never read."""
        for _ in range(100):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind((self.args.address, 0))
            port = a.getsockname()[1]
            if port % 2 == 0:
                b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    b.bind((self.args.address, port + 1))
                except OSError:
                    b.close()
                    a.close()
                    continue
                self.blackholes.extend([a, b])
                return port, port + 1
            a.close()
        sys.exit("origin.py: no free UDP port pair for --udp-blackhole")

    def on_session_removed(self, _pool, session):
        log("ORIGIN session-removed", f"id={session.get_sessionid()}")

    # --- run -----------------------------------------------------------------

    def run(self):
        loop = GLib.MainLoop()
        if self.server.attach(None) == 0:
            sys.exit(f"origin.py: cannot listen on {self.args.address}:{self.args.port}")

        def stop(signame):
            log("ORIGIN stopping", f"signal={signame}")
            loop.quit()
            return GLib.SOURCE_REMOVE

        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop, "TERM")
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop, "INT")
        if self.args.watch_stdin:
            # The test harness holds our stdin open; if it dies without killing
            # us (SIGKILLed test binary, aborted CI job) we see EOF and leave.
            GLib.io_add_watch(
                GLib.IOChannel.unix_new(sys.stdin.fileno()),
                GLib.PRIORITY_DEFAULT,
                GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                lambda *_: stop("stdin-eof") if not sys.stdin.buffer.raw.read(4096) else True,
            )
        log(f"READY port={self.server.get_bound_port()}")
        loop.run()
        # gst-rtsp-server can wedge while tearing sessions down (TESTING.md):
        # whatever happens below, the process is gone a few seconds from now.
        watchdog = threading.Timer(5.0, lambda: os._exit(0))
        watchdog.daemon = True
        watchdog.start()
        # Close every client connection (this tears their sessions down) before
        # exiting, so players see the connection end rather than a hang.
        self.server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="RTSP port (0: any free one)")
    parser.add_argument("--address", default="127.0.0.1", help="listen address")
    parser.add_argument("--media", help="MKV file (H.264 or H.265, + AAC) served at /vod")
    parser.add_argument(
        "--video-codec",
        choices=("h264", "h265"),
        default="h264",
        help="the --media file's video codec (default h264)",
    )
    parser.add_argument(
        "--titles",
        help="comma-separated NAMEs: the --media file also at /vod/NAME (distinct titles)",
    )
    parser.add_argument("--user", help="require these credentials for everything")
    parser.add_argument("--password")
    parser.add_argument("--auth", choices=("basic", "digest"), default="basic")
    parser.add_argument(
        "--udp-blackhole",
        action="store_true",
        help="accept UDP SETUPs but send their media where nobody reads it",
    )
    parser.add_argument(
        "--cache-control", help="send this Cache-Control with DESCRIBE answers (default: none)"
    )
    parser.add_argument(
        "--last-modified",
        help="send this Last-Modified (an HTTP date) with DESCRIBE answers (default: none)",
    )
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin reaches end of file"
    )
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if args.media and not os.path.isfile(args.media):
        parser.error(f"--media {args.media}: no such file")
    Gst.init(None)
    Origin(args).run()


if __name__ == "__main__":
    main()
