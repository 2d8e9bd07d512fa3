"""The telemetry process: `python -m harness.handler.telemetry.child FD`, started by `TelemetryProcess`.

It reads the handler's messages from the socket FD, records them with the OpenTelemetry SDK, exports by
OTLP and answers /metrics scrapes. It ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole
process group): its handler ends it by closing the socket, after handing over what is pending, and it
then exports what it holds and exits. A handler that dies closes the socket too.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from typing import Any

from harness.handler.telemetry.link import read_message, send_message
from harness.handler.telemetry.recorder import RequestRecorder
from harness.handler.telemetry.records import TelemetrySettings
from harness.handler.telemetry.sdk import Telemetry

logger = logging.getLogger("harness.handler.telemetry.child")


def serve(sock: socket.socket) -> int:
    stream = sock.makefile("rb")
    config = read_message(stream)
    if not (isinstance(config, tuple) and config[:1] == ("config",)):
        logger.error("expected the handler's config first, got %r", type(config).__name__)
        return 2
    _, fields, instance_id = config
    telemetry = Telemetry(TelemetrySettings(**fields), instance_id=instance_id)
    recorder = RequestRecorder(telemetry)
    send_message(sock, ("ready",))  # the handler's wait for a reply is short from here on
    try:
        while (message := read_message(stream)) is not None:
            kind = message[0]
            if kind == "items":
                telemetry.set_load(*message[2])
                for item in message[1]:
                    try:
                        recorder.record(item)
                    except Exception:  # one bad item must not stop the others
                        logger.exception("recording a request's telemetry failed")
            elif kind == "dropped":
                recorder.count_dropped(*message[1:])
            elif kind in ("scrape", "flush", "close"):
                telemetry.set_load(*message[1])
                reply: Any = True
                if kind == "scrape":
                    scrape = telemetry.scrape()
                    reply = (scrape.content_type, scrape.payload)
                elif kind == "flush":
                    telemetry.force_flush()
                else:
                    telemetry.shutdown()
                send_message(sock, reply)
                if kind == "close":
                    return 0
            else:
                logger.error("unknown message %r", kind)
    except OSError as exc:
        logger.error("the handler's socket failed: %s", exc)
    telemetry.shutdown()
    return 0


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="edgeharness telemetry: %(levelname)s %(name)s: %(message)s")
    with socket.socket(fileno=int(argv[0])) as sock:
        return serve(sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
