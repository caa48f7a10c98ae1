"""Hosts that sign manifests and keep their chain as bk-run does: with an OpenSSH key file signed by
stock `ssh-keygen -Y sign` (a host without `cryptography`), with an ed25519 key in memory (100,000
manifests sign in seconds), and senders that deliver through the real chain, spool and delivery code."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bk_evidence import manifest
from bk_evidence.chain import Chain
from bk_evidence.delivery import deliver
from bk_evidence.spool import Spool
from support.keys import NAMESPACE, public_line_of, ssh_keygen_sign, sshsig_ed25519


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class SigningHost:
    """A machine that signs manifests and keeps its chain, like bk-run does."""

    name: str
    key: Path
    seq: int = 0
    prev: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def public_line(self) -> str:
        return Path(str(self.key) + ".pub").read_text().strip()

    def document(
        self, ago: timedelta = timedelta(minutes=1), duration: timedelta = timedelta(minutes=5), **fields: Any
    ) -> dict[str, Any]:
        """The next manifest of the chain (not yet advanced), overridable field by field; None removes."""
        finished = datetime.now(UTC) - ago
        doc: dict[str, Any] = {
            "schema": "bk.manifest/v1",
            "id": str(uuid.uuid4()),
            "host": self.name,
            "seq": self.seq + 1,
            "prev": self.prev,
            "kind": "backup",
            "status": "success",
            "started_at": rfc3339(finished - duration),
            "finished_at": rfc3339(finished),
            "job": "home",
            "cadence_seconds": 86400,
            "repository": {"name": "hub", "url": f"rest:https://hub.example:8000/{self.name}/"},
            "snapshot": {"id": uuid.uuid4().hex + uuid.uuid4().hex},
            "stats": {
                "data_added": 1234,
                "files_new": 3,
                "files_changed": 2,
                "files_unmodified": 100,
                "total_bytes_processed": 98765,
            },
        }
        doc.update(fields)
        return {key: value for key, value in doc.items() if value is not None or key == "prev"}

    def text(self, **fields: Any) -> str:
        return manifest.dumps(self.document(**fields))

    def advance(self, text: str) -> str:
        """Record `text` as the chain's newest manifest; returns it."""
        doc = json.loads(text)
        self.seq, self.prev = doc["seq"], manifest.sha256_hex(text)
        self.texts.append(text)
        return text

    def sign(self, text: str, namespace: str = NAMESPACE) -> str:
        return ssh_keygen_sign(self.key, text, namespace)

    def envelope(self, text: str | None = None, **fields: Any) -> dict[str, str]:
        """A signed envelope of `text` (or of the next manifest, which advances the chain)."""
        if text is None:
            text = self.advance(self.text(**fields))
        return {"manifest": text, "signature": self.sign(text)}


@dataclass
class MemoryHost(SigningHost):
    """A SigningHost whose ed25519 key lives in memory (no ssh-keygen per signature)."""

    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @classmethod
    def named(cls, name: str) -> MemoryHost:
        return cls(name, Path("/nonexistent/in-memory-key"))

    @property
    def public_line(self) -> str:
        return public_line_of(self.private)

    def sign(self, text: str, namespace: str = NAMESPACE) -> str:
        return sshsig_ed25519(self.private, text.encode("utf-8"), namespace)

    def signer(self, data: bytes) -> str:
        """For bk_evidence.chain.Chain.append."""
        return sshsig_ed25519(self.private, data)


class Sender:
    """One host: bk_evidence Chain + Spool in a directory, delivering with bk_evidence.delivery."""

    def __init__(self, root: Path, host: MemoryHost) -> None:
        self.host = host
        self.chain = Chain(str(root / host.name / "state"), host.name, Spool(str(root / host.name / "spool")))
        self.made: dict[str, str] = {}  # id -> manifest text, everything this host signed and spooled

    def run(self, finished: datetime, job: str = "home", duration: timedelta = timedelta(minutes=3)) -> str:
        """Record one run's manifest (chain, sign, spool); its id."""
        doc = manifest.new_manifest("backup", "success", finished - duration, finished, job=job, cadence_seconds=3600)
        doc["snapshot"] = {"id": uuid.uuid4().hex + uuid.uuid4().hex}
        signed = self.chain.append(doc, self.host.signer)
        manifest_id = manifest.loads_strict(signed["manifest"])["id"]
        self.made[manifest_id] = signed["manifest"]
        return manifest_id

    def pending_ids(self) -> set[str]:
        return {path.stem.split("-", 1)[1] for path in self.chain.spool.pending()}

    def acknowledged(self) -> set[str]:
        """Made and gone from the outbox: the reporter answered 200/201 for them."""
        return set(self.made) - self.pending_ids()

    def deliver(self, url: str, deadline_seconds: float = 5.0) -> Any:
        self.chain.recover()
        return deliver(
            self.chain.spool, url, deadline_seconds=deadline_seconds, ready=self.chain.deliverable, log=lambda _m: None
        )

    def rejected(self) -> list[Path]:
        return self.chain.spool.rejected()
