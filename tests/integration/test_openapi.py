"""The admin API's OpenAPI document (issue 14 item 8), against a paper daemon's admin API.

* Every route of the aiohttp app is in the document with every method, and the document has
  nothing the app does not route (HEAD, which aiohttp adds to every GET, aside).
* Every operation documents its answers with a JSON schema (``/metrics``: text), a POST its
  auth refusals, a POST with a body its request schema and the body refusals.
* openapi-spec-validator accepts the document the server serves.
* schemathesis (its command line, a fixed seed, ``EXAMPLES`` cases per operation, positive
  and negative data, the stateful phase too) finds no 5xx, no status, content type, header or
  body the document does not describe, no 405 without ``Allow``, and no route that ignores the
  token. Its POSTs halt trading, stop flows and route orders: that is fine in paper mode.

Each check has a negative control: a route added without an entry, an entry without a
schema, a document the validator refuses, and documents that lie about an answer must fail.
openapi-spec-validator and schemathesis come with the ``test`` extra (scripts/bootstrap.sh);
without them these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

from quantumtrade.admin.server import OPENAPI
from quantumtrade.admin.startup import StartupListener
from tests.integration.test_admin_fuzz import DaemonThread, request
from tests.support.admin_daemon import TOKEN

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SEED = 20261204
EXAMPLES = 50
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "allow_header_conformance",
    "missing_required_header",
    "ignored_auth",
]
# Left out: positive_data_acceptance (a valid order may be refused by the risk manager, 422,
# or name a symbol the daemon does not trade, 404) and negative_data_rejection (the server
# ignores fields and parameters it does not read, and trims and upper-cases symbol names).
STARTUP_CHECKS = [c for c in CHECKS if c.endswith("_conformance") and not c.startswith("allow")]
"""Against the start-up listener, whose answers are 503 by design (GET /health: "starting";
anything else: an error), with no 405 for an unknown method and no 401 without a token: only
whether each answer is the one documented."""


def required(module: str) -> ModuleType:
    """``module``, imported; skip without it, except under CI=true, where it fails."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed (scripts/bootstrap.sh test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


# --- the checks -----------------------------------------------------------------------------


def routed(app: web.Application) -> set[tuple[str, str]]:
    """(path, method) of every route of ``app``; HEAD, which aiohttp adds to a GET, left out."""
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        found.add((info.get("path") or info["formatter"], route.method.lower()))
    return found


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, m) for path, item in spec["paths"].items() for m in item if m in METHODS}


def route_differences(app: web.Application, spec: dict[str, Any]) -> list[str]:
    """Routes without an operation and operations without a route, one line each."""
    routes, ops = routed(app), documented(spec)
    return [f"not documented: {m.upper()} {p}" for p, m in sorted(routes - ops)] + [
        f"not routed: {m.upper()} {p}" for p, m in sorted(ops - routes)
    ]


def _schema_of(answer: dict[str, Any]) -> Any:
    content = answer.get("content", {})
    media = content.get("application/json") or content.get("text/plain") or {}
    return media.get("schema")


def documentation_gaps(spec: dict[str, Any]) -> list[str]:
    """What an operation leaves undescribed: an answer without a description or a schema, a
    POST without its auth refusals, a body without a schema or without the body refusals."""
    gaps = []
    for path, method in sorted(documented(spec)):
        op, where = spec["paths"][path][method], f"{method.upper()} {path}"
        answers = op.get("responses", {})
        if not any(code.startswith("2") for code in answers):
            gaps.append(f"{where}: no 2xx answer")
        for code, answer in answers.items():
            if not answer.get("description"):
                gaps.append(f"{where} {code}: no description")
            if _schema_of(answer) is None:
                gaps.append(f"{where} {code}: no schema")
        if method == "post":
            gaps += [f"{where}: no {c}" for c in ("401", "403") if c not in answers]
            body = op.get("requestBody")
            if body is not None:
                if body.get("content", {}).get("application/json", {}).get("schema") is None:
                    gaps.append(f"{where}: request body without a JSON schema")
                refusals = ("400", "408", "413", "415")
                gaps += [f"{where}: no {c}" for c in refusals if c not in answers]
    return gaps


# --- the daemon and the tools ---------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    with DaemonThread(tmp_path_factory.mktemp("openapi")) as running:
        yield running
    assert running.error is None


@pytest.fixture(scope="module")
def port(daemon: DaemonThread) -> int:
    bound = daemon.read(lambda d: d.admin.bound_port)
    assert bound is not None
    return bound


@pytest.fixture(scope="module")
def served(port: int) -> dict[str, Any]:
    status, content_type, body = request(port, "GET", "/api/openapi.json")
    assert status == 200 and content_type.startswith("application/json"), (status, body[:200])
    document: dict[str, Any] = json.loads(body)
    return document


def run_schemathesis(
    location: str,
    cwd: Path,
    *,
    base_url: str | None = None,
    only_path: str | None = None,
    checks: list[str] = CHECKS,
) -> subprocess.CompletedProcess[str]:
    """schemathesis's command line on ``location`` (a URL, or a file served at ``base_url``),
    seeded and deterministic; its reports and database stay in ``cwd``."""
    required("schemathesis")
    args = [sys.executable, "-m", "schemathesis.cli", "run", location]
    args += ["--checks", ",".join(checks), "--max-examples", str(EXAMPLES)]
    args += ["--seed", str(SEED), "--generation-deterministic", "--workers", "1", "--no-color"]
    args += ["--header", f"Authorization: Bearer {TOKEN}", "--request-timeout", "30"]
    if base_url is not None:
        args += ["--url", base_url]
    if only_path is not None:
        args += ["--include-path", only_path]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=240, check=False, env=env
    )


@contextmanager
def startup_listener() -> Iterator[StartupListener]:
    """The start-up listener (what holds the admin port until trading starts) on a free port,
    in its own thread and event loop, in the middle of a phase."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="startup-listener")
    thread.start()
    listener = StartupListener(host="127.0.0.1", port=0, mode="paper")
    try:
        asyncio.run_coroutine_threadsafe(listener.start(), loop).result(30)
        loop.call_soon_threadsafe(listener.set_phase, "warm_up", "compiling the kernels")
        yield listener
    finally:
        asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def operations_run(output: str) -> tuple[int, int]:
    """(selected, total) from schemathesis's "Operations: 16 selected / 16 total"."""
    found = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
    assert found, output[-3000:]
    return int(found[1]), int(found[2])


# --- the tests ------------------------------------------------------------------------------


def test_every_route_is_documented_with_every_method_and_nothing_else(
    daemon: DaemonThread,
) -> None:
    app = daemon.read(lambda d: d.admin.make_app())
    assert route_differences(app, OPENAPI) == []
    assert len(documented(OPENAPI)) == 17


def test_a_route_without_an_entry_or_an_entry_without_a_route_is_reported(
    daemon: DaemonThread,
) -> None:
    """Negative control: the comparison sees both directions and the method, not just paths."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app = daemon.read(lambda d: d.admin.make_app())
    app.router.add_post("/api/trading/positions", handler)  # a path that has a GET already
    app.router.add_get("/api/trading/allocation", handler)
    assert route_differences(app, OPENAPI) == [
        "not documented: GET /api/trading/allocation",
        "not documented: POST /api/trading/positions",
    ]
    fewer = copy.deepcopy(OPENAPI)
    del fewer["paths"]["/api/trading/risk"]
    fewer["paths"]["/api/trading/strategy"]["post"] = fewer["paths"]["/api/trading/risk/state"][
        "post"
    ]
    assert route_differences(daemon.read(lambda d: d.admin.make_app()), fewer) == [
        "not documented: GET /api/trading/risk",
        "not routed: POST /api/trading/strategy",
    ]


def test_every_operation_documents_its_answers_and_body() -> None:
    assert documentation_gaps(OPENAPI) == []
    # Negative control: an answer without a schema, a POST without 401, a body without 415.
    worse = copy.deepcopy(OPENAPI)
    positions = worse["paths"]["/api/trading/positions"]["get"]["responses"]["200"]
    del positions["content"]
    state = worse["paths"]["/api/trading/risk/state"]["post"]["responses"]
    del state["401"], state["415"]
    assert documentation_gaps(worse) == [
        "GET /api/trading/positions 200: no schema",
        "POST /api/trading/risk/state: no 401",
        "POST /api/trading/risk/state: no 415",
    ]


def test_the_served_document_is_the_module_document_and_validates(served: dict[str, Any]) -> None:
    validator = required("openapi_spec_validator")
    assert served == json.loads(json.dumps(OPENAPI))
    validator.validate(served)  # raises on the first error
    assert served["openapi"] == "3.0.3"
    # Negative controls: an answer without a description and a parameter "in" the body; a
    # $ref to a schema that is not there.
    broken = copy.deepcopy(served)
    del broken["paths"]["/health"]["get"]["responses"]["200"]["description"]
    broken["paths"]["/api/trading/anomalies"]["get"]["parameters"][0]["in"] = "body"
    errors = [e.message for e in validator.OpenAPIV30SpecValidator(broken).iter_errors()]
    assert len(errors) == 2, errors  # one per fault, each quoting the part at fault
    assert any("schemas/Health" in e for e in errors), errors
    assert any('"in":"body"' in e for e in errors), errors
    dangling = copy.deepcopy(served)
    risk = dangling["paths"]["/api/trading/risk"]["get"]["responses"]["200"]
    risk["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/Nothing"}
    with pytest.raises(Exception, match="Nothing"):
        validator.validate(dangling)


def test_schemathesis_finds_no_failure(port: int, served: dict[str, Any], tmp_path: Path) -> None:
    # The served document from a file: given its own URL, schemathesis leaves that route out.
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(served))
    done = run_schemathesis(str(path), tmp_path, base_url=f"http://127.0.0.1:{port}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert operations_run(output) == (17, 17)
    cases = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed(.*)", output)
    assert cases, output[-3000:]
    assert cases[1] == cases[2] and "fail" not in cases[3], cases[0]
    assert int(cases[1]) >= 17 * 20, cases[0]  # well above one case per operation
    print(f"schemathesis: {cases[0].split(':')[1].strip()}")


def test_schemathesis_fails_on_a_document_that_lies(
    port: int, served: dict[str, Any], tmp_path: Path
) -> None:
    """Negative control: answers the document misdescribes (a field said to be required, a
    number said to be a string, text said to be JSON) are found, on the same seed."""
    lying = copy.deepcopy(served)
    schemas = lying["components"]["schemas"]
    schemas["Positions"]["required"].append("allocation")
    schemas["Risk"]["properties"]["equity"] = {"type": "string"}
    metrics = lying["paths"]["/metrics"]["get"]["responses"]["200"]
    metrics["content"] = {"application/json": metrics["content"]["text/plain"]}
    path = tmp_path / "lying.json"
    path.write_text(json.dumps(lying))
    base = f"http://127.0.0.1:{port}"
    found = {}
    for route, expected in [
        ("/api/trading/positions", r"ST108 Response violates schema"),
        ("/api/trading/risk", r"ST108 Response violates schema"),
        ("/metrics", r"Undocumented Content-Type"),
    ]:
        done = run_schemathesis(str(path), tmp_path, base_url=base, only_path=route)
        output = done.stdout + done.stderr
        assert done.returncode != 0, output[-3000:]
        found[route] = re.search(expected, output) is not None
        assert found[route], (route, output[-3000:])


def test_schemathesis_finds_the_startup_answers_documented(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """While the daemon starts, the port answers GET /health with 503 "starting" and every
    other request with a 503 error: the document says so for every operation."""
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(served))
    with startup_listener() as listener:
        assert listener.bound_port is not None
        status, _, body = request(listener.bound_port, "GET", "/health")
        assert status == 503 and json.loads(body)["phase"] == "warm_up", body
        status, _, body = request(listener.bound_port, "GET", "/api/trading/risk")
        assert status == 503 and "starting" in json.loads(body)["error"], body
        done = run_schemathesis(str(path), tmp_path, base_url=listener.url, checks=STARTUP_CHECKS)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        assert operations_run(output) == (17, 17)
        # Negative control: without its 503, an operation's start-up answer is undocumented.
        no_503 = copy.deepcopy(served)
        del no_503["paths"]["/api/trading/positions"]["get"]["responses"]["503"]
        path.write_text(json.dumps(no_503))
        done = run_schemathesis(
            str(path), tmp_path, base_url=listener.url, checks=STARTUP_CHECKS,
            only_path="/api/trading/positions",
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode != 0 and "ST103 Undocumented status code" in output, output[-3000:]
