"""Group commit: every request that hands manifests to the writer gets its answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from bk_reporter import group_commit
from bk_reporter.outcome import Outcome


class FakePool:
    @asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        yield None


def test_a_request_arriving_as_the_last_writer_finishes_is_still_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer that ends must not be counted as running when the next request comes in."""

    async def scenario() -> list[Outcome]:
        writer = group_commit.GroupWriter(FakePool())  # type: ignore[arg-type]
        late: list[asyncio.Task[list[Outcome]]] = []

        async def fake_store(conn: object, manifests: Sequence[str]) -> list[Outcome]:
            await asyncio.sleep(0)
            if not late:  # queued to run right after this writer's last step, before its clean-up
                late.append(asyncio.create_task(writer.store(["late"])))  # type: ignore[list-item]
            return [Outcome(201, "stored", "stored", str(m)) for m in manifests]

        monkeypatch.setattr(group_commit.store, "store", fake_store)
        monkeypatch.setattr(group_commit, "WRITERS", 1)
        first = await writer.store(["first"])  # type: ignore[list-item]
        return first + await asyncio.wait_for(late[0], timeout=5)

    outcomes = asyncio.run(scenario())
    assert [outcome.manifest_id for outcome in outcomes] == ["first", "late"]
