"""The answer for one manifest, and the one wording of every enrolment refusal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The refusals an operator must hear of (issue 16): someone holds, or claims, a key it should not.
SECURITY_REFUSALS = frozenset({"bad_signature", "unknown_key", "key_not_for_host"})


@dataclass(frozen=True)
class Outcome:
    """The answer for one manifest: its HTTP status, a machine code and a human sentence."""

    status: int
    code: str
    message: str
    manifest_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "id": self.manifest_id}


def unknown_key(fingerprint: str, manifest_id: str | None = None) -> Outcome:
    return Outcome(401, "unknown_key", f"the key {fingerprint} is not enrolled (or has been retired)", manifest_id)


def key_not_for_host(fingerprint: str, host: str, manifest_id: str | None) -> Outcome:
    return Outcome(401, "key_not_for_host", f"the key {fingerprint} is not enrolled for host {host!r}", manifest_id)
