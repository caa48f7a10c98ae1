"""The chain: any interleaving of runs, crashes and concurrent writers leaves a gap-free,
fork-free chain and loses no manifest that reached the spool."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bk_evidence import chain as chain_module
from bk_evidence import files, manifest, sshsig
from bk_evidence.chain import Chain
from bk_evidence.spool import Spool
from support.keys import make_key, public_line

HOST = "web1"


class Crash(Exception):
    """Stands for the process dying at an injected point."""


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key(tmp_path_factory.mktemp("key"), "ed25519")


def new_doc(label: str = "x") -> dict:
    now = manifest.utc_now()
    return manifest.new_manifest("backup", "success", now, now, job="home", future_label=label)


class Journal:
    """What the test observed: envelopes that reached the outbox, and what a reporter received."""

    def __init__(self, root: Path) -> None:
        self.spooled: set[str] = set()
        self.committed: set[str] = set()
        self.delivered: dict[str, str] = {}
        self.root = root

    def deliver(self, chain: Chain) -> None:
        """What the flusher does, without HTTP: take the deliverable envelopes out of the outbox."""
        for path in chain.spool.pending():
            text = chain.spool.read(path)["manifest"]
            if chain.deliverable(json.loads(text)):
                doc = json.loads(text)
                assert doc["id"] not in self.delivered
                self.delivered[doc["id"]] = text
                chain.spool.remove(path)


def final_chain(chain: Chain, journal: Journal, public: str) -> list[dict]:
    """Recover, deliver everything, then check the invariants on what the reporter holds."""
    chain.recover()
    journal.deliver(chain)
    assert chain.spool.pending() == [], "everything chained must be deliverable after recovery"
    docs = sorted((json.loads(text) for text in journal.delivered.values()), key=lambda doc: doc["seq"])
    assert [doc["seq"] for doc in docs] == list(range(1, len(docs) + 1)), "gap or duplicate seq"
    previous = None
    for doc in docs:
        assert doc["prev"] == previous, "fork: prev does not link to the previous manifest"
        text = journal.delivered[doc["id"]]
        previous = manifest.sha256_hex(text)
        assert manifest.validate(doc) == []
    assert chain.state().seq == len(docs)
    assert chain.state().last_sha256 == previous
    assert journal.spooled <= set(journal.delivered), "a manifest that reached the spool was lost"
    assert journal.committed <= journal.spooled
    return docs


def crashing_append(chain: Chain, key: Path, journal: Journal, crash_at: str | None) -> None:
    def signer(data: bytes) -> str:
        if crash_at == "sign":
            raise Crash()
        return sshsig.sign(data, str(key))

    real_put = Spool.put
    real_write_json = chain_module.write_json

    def put(spool: Spool, envelope: dict, seq: int, manifest_id: str) -> Path:
        if crash_at == "spool-write":
            (spool.tmp / ".tmp-partial").write_text(json.dumps(envelope)[:20])
            raise Crash()
        path = real_put(spool, envelope, seq, manifest_id)
        journal.spooled.add(manifest_id)
        if crash_at == "after-spool":
            raise Crash()
        return path

    def write_json(path: str, value: object) -> None:
        if crash_at == "state-write":
            Path(path + ".tmp-partial").write_text("{")
            raise Crash()
        real_write_json(path, value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Spool, "put", put)
        patch.setattr(chain_module, "write_json", write_json)
        doc = new_doc()
        try:
            chain.append(doc, signer)
        except Crash:
            return
        journal.committed.add(doc["id"])


STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"), st.sampled_from([None, None, "sign", "spool-write", "after-spool", "state-write"])
        ),
        st.tuples(st.just("deliver"), st.none()),
        st.tuples(st.just("recover"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_runs_crashes_and_deliveries_leave_a_sound_chain(key: Path, steps: list) -> None:
    root = Path(tempfile.mkdtemp(prefix="bk-chain-"))
    try:
        chain = Chain(str(root / "state"), HOST, Spool(str(root / "spool")))
        journal = Journal(root)
        for action, crash_at in steps:
            if action == "append":
                crashing_append(chain, key, journal, crash_at)
            elif action == "deliver":
                journal.deliver(chain)
            else:
                chain.recover()
        final_chain(chain, journal, public_line(key))
    finally:
        shutil.rmtree(root)


def test_an_orphan_is_adopted_by_the_next_append(key: Path, tmp_path: Path) -> None:
    chain = Chain(str(tmp_path / "state"), HOST, Spool(str(tmp_path / "spool")))
    journal = Journal(tmp_path)
    crashing_append(chain, key, journal, "after-spool")
    assert chain.state().seq == 0
    orphan = chain.spool.pending()[0]
    assert not chain.deliverable(json.loads(chain.spool.read(orphan)["manifest"]))
    envelope = chain.append(new_doc(), lambda data: sshsig.sign(data, str(key)))
    doc = json.loads(envelope["manifest"])
    assert doc["seq"] == 2
    assert doc["prev"] == manifest.sha256_hex(chain.spool.read(orphan)["manifest"])


def test_a_state_for_another_host_starts_a_new_chain(key: Path, tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"))
    Chain(str(tmp_path / "state"), "old-name", spool).append(new_doc(), lambda data: sshsig.sign(data, str(key)))
    renamed = Chain(str(tmp_path / "state"), HOST, spool)
    assert renamed.state().seq == 0
    envelope = renamed.append(new_doc(), lambda data: sshsig.sign(data, str(key)))
    assert json.loads(envelope["manifest"])["seq"] == 1


def test_an_invalid_manifest_is_refused_before_signing(key: Path, tmp_path: Path) -> None:
    chain = Chain(str(tmp_path / "state"), HOST, Spool(str(tmp_path / "spool")))
    with pytest.raises(manifest.ManifestError):
        chain.append(dict(new_doc(), status="fine"), lambda data: pytest.fail("signed an invalid manifest"))
    assert chain.state().seq == 0
    assert chain.spool.pending() == []


def test_envelopes_verify(key: Path, tmp_path: Path) -> None:
    chain = Chain(str(tmp_path / "state"), HOST, Spool(str(tmp_path / "spool")))
    envelope = chain.append(new_doc(), lambda data: sshsig.sign(data, str(key)))
    assert sshsig.verify(envelope["manifest"].encode(), envelope["signature"], [public_line(key)])


# --- concurrent processes ----------------------------------------------------------------


def _worker(root: str, key: str, plan: list[str | None], log: str) -> None:
    """Append per plan; a crash point ends the process with os._exit, as a kill would."""
    chain = Chain(os.path.join(root, "state"), HOST, Spool(os.path.join(root, "spool")))
    real_put = Spool.put

    def put(spool: Spool, envelope: dict, seq: int, manifest_id: str) -> Path:
        path = real_put(spool, envelope, seq, manifest_id)
        with open(log, "a") as handle:
            handle.write(manifest_id + "\n")
        if crash_at == "after-spool":
            os._exit(3)
        return path

    Spool.put = put  # type: ignore[method-assign]  # this process only
    for crash_at in plan:

        def signer(data: bytes, crash: str | None = crash_at) -> str:
            if crash == "sign":
                os._exit(3)
            return sshsig.sign(data, key)

        chain.append(new_doc(), signer)
    os._exit(0)


def _deliverer(root: str, rounds: int, delivered_dir: str) -> None:
    chain = Chain(os.path.join(root, "state"), HOST, Spool(os.path.join(root, "spool")))
    for _round in range(rounds):
        for path in chain.spool.pending():
            try:
                text = chain.spool.read(path)["manifest"]
            except FileNotFoundError:
                continue
            if chain.deliverable(json.loads(text)):
                files.atomic_write(os.path.join(delivered_dir, path.name), text.encode())
                chain.spool.remove(path)
    os._exit(0)


PLANS = st.lists(
    st.lists(st.sampled_from([None, None, None, "sign", "after-spool"]), min_size=1, max_size=12),
    min_size=2,
    max_size=4,
)


@settings(max_examples=12, deadline=None)
@given(plans=PLANS)
def test_concurrent_processes_with_crashes_never_fork_or_lose(key: Path, plans: list[list[str | None]]) -> None:
    root = tempfile.mkdtemp(prefix="bk-chain-mp-")
    try:
        delivered_dir = os.path.join(root, "delivered")
        os.makedirs(delivered_dir)
        log = os.path.join(root, "spooled.log")
        context = multiprocessing.get_context("fork")
        workers = [context.Process(target=_worker, args=(root, str(key), plan, log)) for plan in plans]
        workers.append(context.Process(target=_deliverer, args=(root, 30, delivered_dir)))
        for process in workers:
            process.start()
        for process in workers:
            process.join(120)
            assert process.exitcode is not None
        chain = Chain(os.path.join(root, "state"), HOST, Spool(os.path.join(root, "spool")))
        journal = Journal(Path(root))
        for name in os.listdir(delivered_dir):
            text = Path(delivered_dir, name).read_text()
            journal.delivered[json.loads(text)["id"]] = text
        journal.spooled = set(Path(log).read_text().split()) if os.path.exists(log) else set()
        docs = final_chain(chain, journal, public_line(key))
        assert len(docs) == len(journal.spooled)
    finally:
        shutil.rmtree(root)
