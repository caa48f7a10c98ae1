"""The answer for one manifest (or one request)."""

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
