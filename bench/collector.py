"""A loopback OTLP/HTTP traces collector for the benchmark, in its own process.

    python bench/collector.py

Prints ``PORT <n>``, takes ``POST /v1/traces`` (protobuf, decoded with ``opentelemetry-proto``:
a collector that read nothing would cost the exporter less than a real one), answers 200, and
when its stdin closes prints ``SPANS <count>`` and exits.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_REPLY = ExportTraceServiceResponse().SerializeToString()


def main() -> int:
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector serves an exporter

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with lock:
                count[0] += spans
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(_REPLY)))
            self.end_headers()
            self.wfile.write(_REPLY)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the benchmark closes it
    server.shutdown()
    with lock:
        print(f"SPANS {count[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
