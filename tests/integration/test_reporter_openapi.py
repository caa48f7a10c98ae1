"""The served OpenAPI document is the checked-in one, and the API keeps to it under schemathesis."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bk_reporter import openapi
from bk_reporter.settings import Settings
from support.reporters import ONE_ADDRESS_LIMITS, LiveReporter, ReporterDatabase, serving
from support.signing_hosts import SigningHost

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# positive_data_acceptance is left out on purpose: a schema-valid envelope whose signature
# does not verify must be refused (401), and no schema can say what a valid signature is.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES_PER_OPERATION_AND_MODE = 300


@pytest.fixture
def reporter(reporter_db: ReporterDatabase) -> Iterator[LiveReporter]:
    """Hundreds of requests a second from 127.0.0.1: past the per-client ingest limit, which would
    answer 429 (documented) instead of exercising the endpoints; the limit has its own tests."""
    with serving(reporter_db, Settings(**ONE_ADDRESS_LIMITS)) as live:
        yield live


MINIMUM_REQUESTS = 2000


def test_the_served_document_is_the_checked_in_one(client: httpx.Client) -> None:
    served = client.get("/api/v1/openapi.json").json()
    assert served == openapi.document()
    assert json.loads(CHECKED_IN.read_text()) == served, "regenerate: bk-reporter openapi > docs/openapi.json"


def _exercise(operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str, calls: Counter) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS)
        calls[(operation.label, mode.value)] += 1

    try:
        exercise()
    except hypothesis.errors.Unsatisfiable:
        # Some inputs have no invalid form (any string is a valid path parameter).
        if mode is not GenerationMode.NEGATIVE:
            raise


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    return bool(operation.path_parameters or operation.query or operation.body)


def test_schemathesis_finds_no_server_error_and_no_contract_violation(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    seeded = client.post("/api/v1/manifests/batch", json=[web1.envelope() for _n in range(3)])
    assert [item["status"] for item in seeded.json()] == [201] * 3
    schema = schemathesis.openapi.from_dict(openapi.document())
    calls: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = list(GenerationMode) if _has_inputs(operation) else [GenerationMode.POSITIVE]
        for mode in modes:
            _exercise(operation, mode, reporter.url, calls)
    print(dict(calls))
    assert sum(calls.values()) >= MINIMUM_REQUESTS, dict(calls)
