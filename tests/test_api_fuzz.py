"""Schemathesis over the whole OpenAPI schema, on a small store: no input may get a 5xx, and every response
must match the schema (status code, content type, body).

The cases are generated from the schema by Hypothesis, derandomized so that CI runs the same cases every time;
the number of cases per operation (``FOREWARN_FUZZ_EXAMPLES``, default 25) keeps the whole run near a minute.
The count of generated cases is printed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from forewarn.api.app import create_app
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.state import tokens
from forewarn.state.db import transaction, upgrade
from incident_helpers import seed_isp

EXAMPLES = int(os.environ.get("FOREWARN_FUZZ_EXAMPLES", "25"))
HOME = Path(tempfile.mkdtemp(prefix="fw-fuzz-"))  # made at import: the schema is read when collecting
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def _store() -> tuple[Context, str]:
    """A small seeded store (12 customers, 2 services, an open incident) and an admin token for it."""
    url = f"sqlite:///{HOME / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=HOME, database_url=url, api={"rate_limit": 0}))
    seed_isp(ctx.engine)
    with transaction(ctx.engine) as s:
        _, token = tokens.create(s, "fuzz", ["admin"], actor="cli:tests")
    return ctx, token


CTX, TOKEN = _store()
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CTX))
CASES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    CTX.close()
    shutil.rmtree(HOME, ignore_errors=True)
    line = f"schemathesis: {sum(CASES.values())} generated cases over {len(CASES)} operations"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}")
    else:
        print(line)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_input_breaks_the_api(case: schemathesis.Case) -> None:
    CASES[case.operation.label] += 1
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}  # who may call: test_auth.py
    case.call_and_validate(checks=CHECKS)
