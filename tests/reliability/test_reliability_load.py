"""Load: 100,000 manifests from 1,000 hosts delivered concurrently in batches to a real reporter
process; nothing lost, nothing duplicated, every chain intact, and `bk-reporter audit` agrees.

Everything is signed in advance (ed25519 in memory, about 80 µs a manifest) so that the timed
part is delivery. Each sender also retries one of its batches, as a host does after a lost
answer: the retry must be answered 200 and store nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bk_evidence import manifest
from bk_reporter import hosts
from support.database import chain_figures
from support.keys import public_line_of, sshsig_ed25519
from support.reporters import ONE_ADDRESS_FLEET, ReporterDatabase, reporter_process, run_audit
from support.signing_hosts import rfc3339

HOSTS = 1000
PER_HOST = 100
SENDERS = 4
BATCH_ITEMS = 1000
BATCH_PATH = "/api/v1/manifests/batch"


@dataclass
class Workload:
    public_lines: dict[str, str]
    chains: dict[str, list[dict[str, str]]]  # each host's envelopes, seq 1 first

    def share(self, sender: int) -> list[dict[str, str]]:
        """The envelopes of every SENDERS-th host, in (seq, host) order: its chains advance together."""
        names = sorted(self.chains)[sender::SENDERS]
        return [self.chains[name][seq] for seq in range(PER_HOST) for name in names]

    def ids(self) -> set[str]:
        return {json.loads(e["manifest"])["id"] for chain in self.chains.values() for e in chain}


def signed_chains(names: list[str]) -> tuple[dict[str, str], dict[str, list[dict[str, str]]]]:
    """Fresh ed25519 keys for `names` and PER_HOST chained, signed manifests each (hourly runs)."""
    now = datetime.now(UTC).replace(microsecond=0)
    chains: dict[str, list[dict[str, str]]] = {}
    public_lines = {}
    for name in names:
        key = Ed25519PrivateKey.generate()
        public_lines[name], chains[name], prev = public_line_of(key), [], None
        for seq in range(1, PER_HOST + 1):
            finished = now - timedelta(hours=PER_HOST - seq)
            doc = {
                "schema": manifest.SCHEMA,
                "id": str(uuid.uuid4()),
                "host": name,
                "seq": seq,
                "prev": prev,
                "kind": "backup",
                "status": "success",
                "started_at": rfc3339(finished - timedelta(minutes=4)),
                "finished_at": rfc3339(finished),
                "job": "home",
                "cadence_seconds": 3600,
                "snapshot": {"id": uuid.uuid4().hex * 2},
                "stats": {"data_added": seq, "files_new": 1, "total_bytes_processed": 4096},
            }
            text = manifest.dumps(doc)
            prev = manifest.sha256_hex(text)
            chains[name].append({"manifest": text, "signature": sshsig_ed25519(key, text.encode())})
    return public_lines, chains


def signed_fleet() -> Workload:
    """Signed on both cores: half the hosts in a forked worker, half here."""
    names = [f"host{index:04d}" for index in range(HOSTS)]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        other_half = pool.apply_async(signed_chains, (names[::2],))
        public_lines, chains = signed_chains(names[1::2])
        more_lines, more_chains = other_half.get(600)
    return Workload(public_lines | more_lines, chains | more_chains)


def send(url: str, envelopes: list[dict[str, str]]) -> list[int]:
    """One sender: its batches in order, then one batch again (a retry after a lost answer)."""
    statuses = []
    batches = [envelopes[start : start + BATCH_ITEMS] for start in range(0, len(envelopes), BATCH_ITEMS)]
    with httpx.Client(base_url=url, timeout=300) as client:
        for batch in [*batches, batches[len(batches) // 2]]:
            response = client.post(BATCH_PATH, content=json.dumps(batch).encode())
            assert response.status_code == 200, response.text[:300]
            statuses.extend(item["status"] for item in response.json())
    return statuses


def test_100000_manifests_from_1000_hosts_none_lost_none_duplicated_chains_intact(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    started = time.monotonic()
    workload = signed_fleet()
    signed_at = time.monotonic()
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key(name, line) for name, line in workload.public_lines.items()])
    shares = [workload.share(sender) for sender in range(SENDERS)]
    with reporter_process(reporter_db, tmp_path, log_level="warning", **ONE_ADDRESS_FLEET) as reporter:
        with ThreadPoolExecutor(SENDERS) as pool:
            answers = list(pool.map(lambda share: send(reporter.url, share), shares))
        delivered_at = time.monotonic()
    statuses = [status for sender in answers for status in sender]
    retried = len(statuses) - HOSTS * PER_HOST
    assert statuses.count(201) == HOSTS * PER_HOST and statuses.count(200) == retried
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        stored = [str(row[0]) for row in conn.execute("SELECT id FROM events")]
    assert len(stored) == len(set(stored)) == HOSTS * PER_HOST, "lost or duplicated"
    assert set(stored) == workload.ids()
    chains, breaks = chain_figures(reporter_db.owner_url)
    assert chains == {name: (PER_HOST, PER_HOST) for name in workload.public_lines} and breaks == 0
    audit = run_audit(reporter_db)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    rate = HOSTS * PER_HOST / (delivered_at - signed_at)
    print(
        f"signing {signed_at - started:.1f} s, delivery {delivered_at - signed_at:.1f} s ({rate:.0f} manifests/s), "
        f"audit {time.monotonic() - delivered_at:.1f} s"
    )
