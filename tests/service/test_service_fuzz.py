"""Fuzz every operation of the OpenAPI schema (schemathesis): never a 5xx, answers conform, and
what the schema allows the validators accept (a request the schema calls valid may be refused
only by the bundle's rules: an unknown modality, a wrong dimension).

Bounded: a few examples per operation, so the whole file runs in seconds. Generation reads the
schema's regexes with Python's ``re``, so a difference between regex dialects (U+0085 in ids)
is caught by ``test_service_contract.py``, which runs the schema's pattern in an ECMA engine."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bundle.testing import make_bundle
from service.app import create_app, unprocessable
from service.settings import Settings
from tests.service.conftest import API_KEY, AUTH

# The schema is read at collection time, so the app (not yet started) is built at import.
WORKDIR = Path(tempfile.mkdtemp(prefix="fuzz-"))
make_bundle(WORKDIR / "bundle")
app = create_app(Settings(
    bundle=WORKDIR / "bundle",
    database_url=f"sqlite:///{WORKDIR / 'store.db'}",
    redis_url=None,  # schemathesis gives each call its own event loop; caching is tested apart
    api_key=API_KEY,
    max_batch=8,
))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
REFUSED_BY_VALIDATION = "x-test-refused-by-validation"


async def _marked(request: Request, exc: Exception):
    """The app's own 422, marked when the request validators (not the bundle's rules) refused."""
    response = await unprocessable(request, exc)
    response.headers[REFUSED_BY_VALIDATION] = "1"
    return response


app.add_exception_handler(RequestValidationError, _marked)


def schema_and_validators_agree(ctx, response, case) -> None:
    """A request generated as schema-valid must not be refused by the request validators."""
    meta = case.meta
    if (meta is not None and meta.generation.mode.is_positive
            and response.headers.get(REFUSED_BY_VALIDATION)):
        raise AssertionError(f"the schema allows what the validators refuse: "
                             f"{response.status_code} {response.text[:500]}")


@pytest.fixture(scope="module", autouse=True)
def started_app():
    with TestClient(app):  # runs the lifespan: bundle, store and cache are up
        yield
    shutil.rmtree(WORKDIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_on_fuzzed_requests(case: schemathesis.Case):
    # Modality names and dims come from the bundle at run time, not from the schema, and ids
    # must exist: schema-valid requests may rightly get 422/404, so that one check is off.
    # ... but the request validators must accept whatever the schema allows: checked here.
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance],
                           additional_checks=[schema_and_validators_agree])


@schema.parametrize()
@settings(phases=[Phase.explicit], deadline=None, suppress_health_check=list(HealthCheck))
def test_the_documented_examples_are_accepted(case: schemathesis.Case):
    # the /docs examples come from the served bundle (its modalities and dims, ids it knows),
    # so a request built from them must not be rejected: every check, acceptance included
    case.call_and_validate(headers=AUTH, additional_checks=[schema_and_validators_agree])
