# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-host hash chain: every manifest gets ``seq`` (from 1, no gaps) and ``prev``.

All steps of one append run under ``<state_dir>/chain.lock``: allocate ``seq``/``prev``, build
and sign, write the envelope to the spool's outbox, then advance ``<state_dir>/chain.json``.
A crash after the outbox write and before the state update is repaired by the next
allocation, which adopts the outbox envelope that continues the chain."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, NamedTuple, Optional

from .files import ensure_directory, locked, read_json, write_json
from .manifest import ManifestError, dumps, envelope, loads_strict, sha256_hex, validate
from .spool import Spool, seq_of

Signer = Callable[[bytes], str]


class ChainState(NamedTuple):
    host: str
    seq: int
    last_sha256: Optional[str]


def read_state(state_dir: str, host: str) -> ChainState:
    """The chain state in ``state_dir`` for ``host``, without creating anything."""
    raw = read_json(os.path.join(state_dir, "chain.json"), None)
    if not isinstance(raw, dict) or raw.get("host") != host:
        return ChainState(host, 0, None)
    return ChainState(host, int(raw["seq"]), raw.get("last_sha256"))


class Chain:
    """Numbers, signs and spools the manifests of one host."""

    def __init__(self, state_dir: str, host: str, spool: Spool) -> None:
        self.state_dir = ensure_directory(state_dir)
        self.host = host
        self.spool = spool
        self.state_path = os.path.join(state_dir, "chain.json")
        self.lock_path = os.path.join(state_dir, "chain.lock")

    def state(self) -> ChainState:
        """The last chained manifest of this host (seq 0 before the first)."""
        return read_state(self.state_dir, self.host)

    def append(self, doc: Dict[str, Any], signer: Signer) -> Dict[str, str]:
        """Chain, validate, sign and spool a manifest (given without host/seq/prev); the envelope."""
        with locked(self.lock_path):
            current = self._adopt_orphans(self.state())
            chained = dict(doc, host=self.host, seq=current.seq + 1, prev=current.last_sha256)
            problems = validate(chained)
            if problems:
                raise ManifestError("schema", "invalid manifest: " + "; ".join(problems))
            text = dumps(chained)
            signed = envelope(text, signer(text.encode("utf-8")))
            self.spool.put(signed, chained["seq"], chained["id"])
            self._save(ChainState(self.host, chained["seq"], sha256_hex(text)))
        return signed

    def recover(self) -> ChainState:
        """Adopt envelopes spooled by a writer that crashed before updating the state."""
        with locked(self.lock_path):
            return self._adopt_orphans(self.state())

    def deliverable(self, manifest_doc: Dict[str, Any]) -> bool:
        """Whether a spooled manifest may be delivered: another host's, or already chained."""
        if manifest_doc.get("host") != self.host:
            return True
        seq = manifest_doc.get("seq")
        return isinstance(seq, int) and seq <= self.state().seq

    def _adopt_orphans(self, current: ChainState) -> ChainState:
        while True:
            orphan_hash = self._orphan_continuing(current)
            if orphan_hash is None:
                return current
            current = ChainState(self.host, current.seq + 1, orphan_hash)
            self._save(current)

    def _orphan_continuing(self, current: ChainState) -> Optional[str]:
        """The hash of an outbox manifest with seq = current + 1 and prev = current's hash."""
        for path in self.spool.pending():
            if seq_of(path) != current.seq + 1:
                continue
            try:
                text = self.spool.read(path)["manifest"]
                doc = loads_strict(text)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (
                doc.get("host") == self.host
                and doc.get("seq") == current.seq + 1
                and doc.get("prev") == current.last_sha256
            ):
                return sha256_hex(text)
        return None

    def _save(self, state: ChainState) -> None:
        write_json(self.state_path, {"host": state.host, "seq": state.seq, "last_sha256": state.last_sha256})
