"""A JSON webhook receiver for the scenario's notification checks (stdlib only).

Runs on the reporter's host, on loopback, as a transient systemd unit started by
verify/notify.yml; the reporter's notify route posts to it with Apprise's json://.
Each POST body is appended to FILE as one JSON line, with the time it arrived, so the
checks can count messages and measure how long one took from the evidence to here.

Usage: notify_receiver.py PORT FILE
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    out_file = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            message = json.loads(body)
        except ValueError:
            message = {"unparsed": body.decode("utf-8", "replace")}
        line = json.dumps({"received_at": time.time(), "path": self.path, "message": message})
        with open(self.out_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return  # the file is the record; the journal needs no copy


def main() -> None:
    port, out_file = int(sys.argv[1]), sys.argv[2]
    Receiver.out_file = out_file
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
