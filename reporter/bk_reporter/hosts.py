"""Enrolled host keys: the only keys a manifest can verify with.

Keys come from the operator (`bk-reporter hosts add|import`, run by the reporter role with
every inventory host's SSH host keys), never from a request. They are written with the
schema owner's connection: the application role can only read them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bk_evidence import sshsig

HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,252}")
KEY_TYPE = re.compile(r"^(ssh-|ecdsa-|sk-)")
QUOTED_OR_PLAIN_TOKEN = re.compile(r'(?:"[^"]*"|[^\s"])+')
QUOTED_OR_PLAIN_OPTION = re.compile(r'(?:"[^"]*"|[^,"])+')
PATTERN_CHARACTERS = set("*?!")


class EnrollmentError(ValueError):
    """A key or a host name cannot be enrolled; the message says why (with line numbers for files)."""


@dataclass(frozen=True)
class HostKey:
    host: str
    public_key: str  # "keytype base64"
    key_type: str
    fingerprint: str
    comment: str | None


def host_key(host: str, line: str) -> HostKey:
    """A host name and an OpenSSH public key line (`keytype base64 [comment]`), checked."""
    if not HOST_NAME.fullmatch(host):
        raise EnrollmentError(f"{host!r} is not a usable host name (letters, digits and _.:@- only)")
    try:
        public_key = sshsig.normalize_public_key(line)
    except ValueError as exc:
        raise EnrollmentError(f"not an OpenSSH public key: {exc}") from exc
    fields = line.split(None, 2)
    comment = fields[2].strip() if len(fields) > 2 and fields[2].strip() else None
    return HostKey(host, public_key, public_key.split()[0], sshsig.fingerprint(public_key), comment)


def _signers_line(line: str) -> list[HostKey]:
    tokens = QUOTED_OR_PLAIN_TOKEN.findall(line)
    principals, rest = tokens[0].strip('"').split(","), tokens[1:]
    if rest and not KEY_TYPE.match(rest[0]):
        _check_options(rest[0])
        rest = rest[1:]
    patterns = [p for p in principals if PATTERN_CHARACTERS & set(p)]
    if patterns:
        raise EnrollmentError(f"principal patterns cannot name a host: {', '.join(patterns)}")
    return [host_key(principal, " ".join(rest)) for principal in principals]


def _check_options(options: str) -> None:
    for option in QUOTED_OR_PLAIN_OPTION.findall(options):
        name, value = option.partition("=")[::2]
        if name.lower() == "namespaces" and sshsig.NAMESPACE not in value.strip('"').split(","):
            raise EnrollmentError(f"the key is restricted to namespaces {value} (bk needs {sshsig.NAMESPACE})")
        if name.lower() in ("cert-authority", "valid-after", "valid-before"):
            raise EnrollmentError(f"the option {name} is not supported: enroll plain host keys")


def parse_allowed_signers(text: str) -> list[HostKey]:
    """Every key of an allowed_signers file (`principals [options] keytype base64 [comment]`).

    All or nothing: any unusable line raises, naming every bad line.
    """
    keys, errors = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.extend(_signers_line(line))
        except EnrollmentError as exc:
            errors.append(f"line {number}: {exc}")
    if errors:
        raise EnrollmentError("; ".join(errors))
    return keys


ENROLL = """
INSERT INTO host_keys (host, fingerprint, public_key, key_type, comment)
VALUES (%(host)s, %(fingerprint)s, %(public_key)s, %(key_type)s, %(comment)s)
ON CONFLICT (host, fingerprint) DO NOTHING
RETURNING fingerprint
"""

RETIRED = "SELECT retired_at FROM host_keys WHERE host = %(host)s AND fingerprint = %(fingerprint)s"

RETIRE = """
UPDATE host_keys SET retired_at = now()
 WHERE host = %(host)s AND fingerprint = %(fingerprint)s AND retired_at IS NULL
RETURNING fingerprint
"""

LIST = """
SELECT host, fingerprint, key_type, comment, enrolled_at, retired_at, public_key
  FROM host_keys ORDER BY host, enrolled_at, fingerprint
"""


def enroll(conn: psycopg.Connection, keys: Sequence[HostKey]) -> list[tuple[HostKey, bool]]:
    """Enroll keys in one transaction; (key, newly enrolled?) each. A retired key is refused."""
    results = []
    with conn.transaction():
        for key in keys:
            inserted = conn.execute(ENROLL, vars(key)).fetchone() is not None
            if not inserted:
                (retired_at,) = conn.execute(RETIRED, vars(key)).fetchone() or (None,)
                if retired_at is not None:
                    raise EnrollmentError(
                        f"the key {key.fingerprint} of {key.host} was retired ({retired_at:%Y-%m-%d})"
                    )
            results.append((key, inserted))
    return results


def retire(conn: psycopg.Connection, host: str, key: str) -> str:
    """Retire a host's key, given as a public key line or a fingerprint; returns the fingerprint."""
    fingerprint = key if key.startswith("SHA256:") else host_key(host, key).fingerprint
    params = {"host": host, "fingerprint": fingerprint}
    with conn.transaction():
        if conn.execute(RETIRE, params).fetchone() is not None:
            return fingerprint
        row = conn.execute(RETIRED, params).fetchone()
    if row is None:
        raise EnrollmentError(f"no key {fingerprint} is enrolled for {host}")
    raise EnrollmentError(f"the key {fingerprint} of {host} is already retired")


def enrolled(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(LIST).fetchall()


def doubled_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Warnings for hosts with more than one active key of a type (an old key left after a rotation)."""
    active: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["retired_at"] is None:
            active.setdefault((row["host"], row["key_type"]), []).append(row["fingerprint"])
    return [
        f"{host} has {len(prints)} active {key_type} keys ({', '.join(prints)}): retire the old one"
        f" with bk-reporter hosts retire {host} FINGERPRINT"
        for (host, key_type), prints in sorted(active.items())
        if len(prints) > 1
    ]
