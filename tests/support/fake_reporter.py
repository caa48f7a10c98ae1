"""A loopback stand-in for the reporter's batch endpoint, for delivery tests that need to force
its answers (outages, item limits); it verifies and stores as strictly as the reporter does."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bk_evidence import manifest, sshsig


class FakeReporter:
    """The reporter's batch endpoint, strictly: verify, validate, store append-only, per-item answers.

    ``keys`` maps host names to allowed public key lines. ``force_status`` answers every batch with
    that HTTP status instead (to simulate outages)."""

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self.keys = keys
        self.stored: dict[str, str] = {}
        self.by_position: dict[tuple[str, int], str] = {}
        self.requests = 0
        self.force_status: int | None = None
        self.max_items: int | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeReporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def manifests(self) -> list[dict]:
        with self.lock:
            return [json.loads(text) for text in self.stored.values()]

    def answer(self, item: object) -> dict:
        if not isinstance(item, dict) or not isinstance(item.get("manifest"), str) or "signature" not in item:
            return {"status": 400, "code": "bad_envelope", "message": "not an envelope"}
        text = item["manifest"]
        try:
            doc = manifest.loads_strict(text)
        except manifest.ManifestError as exc:
            return {"status": 400, "code": exc.code, "message": exc.message}
        try:
            sshsig.verify(text.encode(), item["signature"], self.keys.get(str(doc.get("host")), []))
        except sshsig.SignatureError as exc:
            return {"status": 401, "code": "bad_signature", "message": str(exc), "id": doc.get("id")}
        problems = manifest.validate(doc)
        if problems:
            return {"status": 422, "code": "schema", "message": "; ".join(problems), "id": doc.get("id")}
        return self._store(doc, text)

    def _store(self, doc: dict, text: str) -> dict:
        with self.lock:
            known = self.stored.get(doc["id"])
            if known is not None:
                status = 200 if known == text else 409
                return {"status": status, "code": "duplicate", "message": "known id", "id": doc["id"]}
            position = (doc["host"], doc["seq"])
            if position in self.by_position:
                return {"status": 409, "code": "fork", "message": "seq taken", "id": doc["id"]}
            self.stored[doc["id"]] = text
            self.by_position[position] = doc["id"]
        return {"status": 201, "code": "stored", "message": "stored", "id": doc["id"]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                with reporter.lock:
                    reporter.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if reporter.force_status is not None:
                    self._send(reporter.force_status, {"code": "forced", "message": "simulated"})
                elif self.path != "/api/v1/manifests/batch":
                    self._send(404, {"code": "not_found", "message": self.path})
                else:
                    try:
                        items = json.loads(body)
                    except ValueError:
                        self._send(400, {"code": "bad_json", "message": "not JSON"})
                        return
                    if reporter.max_items is not None and len(items) > reporter.max_items:
                        self._send(413, {"code": "too_large", "message": "too many items"})
                        return
                    self._send(200, [reporter.answer(item) for item in items])

            def _send(self, status: int, value: object) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
