"""The shared client contract (`clients/operations.json`) against the service's OpenAPI document
(`clients/openapi.json`) and the Python client. The TypeScript client's
`clients/typescript/test/contract.test.ts` checks the same list, so the two cannot drift;
`tests/integration/test_openapi_committed.py` checks the committed document is the app's."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

import kinde_credits_client
from kinde_credits_client import CreditsClient, CreditsError
from kinde_credits_client import client as client_module
from kinde_credits_client.errors import _BY_CODE, _BY_STATUS, error_for

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
CONTRACT: dict[str, Any] = json.loads((CLIENTS / "operations.json").read_text())
OPENAPI: dict[str, Any] = json.loads((CLIENTS / "openapi.json").read_text())
OPERATIONS: list[dict[str, Any]] = CONTRACT["operations"]

# How to call each operation once; a new operation in operations.json needs a line here.
SAMPLE_CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "record_usage": (("org_a", "f", 1), {}),
    "check": (("org_a", "f", 1), {}),
    "hold": (("org_a",), {"credits": 5}),
    "capture_hold": (("hold_1",), {}),
    "release_hold": (("hold_1",), {}),
    "top_up": (("org_a",), {"bundle": "starter"}),
    "wallet": (("org_a",), {}),
    "ledger": (("org_a",), {}),
    "ledger_pages": (("org_a",), {}),
    "set_budget": (("org_a", "kp_b"), {"credits_per_day": 5}),
    "members": (("org_a",), {}),
    "adjust": (("org_a", 5, "goodwill"), {}),
    "refund": (("org_a", 7, "mistake"), {}),
    "forecast": (("org_a",), {}),
}
ANSWER = {"entry": {}, "balance": 0, "available": 0, "allowed": True, "credits": 0,
          "wallet_id": "org_a", "owner_type": "org", "held": 0, "hold_id": "hold_1",
          "amount": 5, "entries": [], "next_cursor": None, "members": []}


class FakeResponse:
    status_code = 200
    headers: dict[str, str] = {}
    text = ""

    def json(self) -> dict[str, Any]:
        return ANSWER


class RecordingSession:
    """Stands in for `requests.Session`: records what the client would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str | None]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        path = url.removeprefix("http://svc.test")
        self.sent.append((method, path, kwargs["headers"].get("Idempotency-Key")))
        return FakeResponse()


def path_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$")


def recording_client() -> tuple[CreditsClient, RecordingSession]:
    session = RecordingSession()
    return CreditsClient("http://svc.test", "t", session=session), session  # type: ignore[arg-type]


def test_every_shared_operation_is_a_route_of_the_openapi_document() -> None:
    for op in OPERATIONS:
        found = OPENAPI["paths"].get(op["path"], {}).get(op["method"].lower())
        assert found is not None, f"{op['method']} {op['path']} ({op['python']}) not documented"
        keyed = any(p["in"] == "header" and p["name"] == CONTRACT["retry"][
            "idempotency_key_header"] for p in found.get("parameters", []))
        assert keyed == (op["method"] != "GET"), op["path"]
        assert ("idempotency_key" in op) == (op["method"] != "GET"), op["python"]


def test_the_python_client_has_exactly_the_shared_operations() -> None:
    public = {name for name, _ in inspect.getmembers(CreditsClient, inspect.isfunction)
              if not name.startswith("_") and name != "request"}
    assert public == {op["python"] for op in OPERATIONS}


@pytest.mark.parametrize("op", OPERATIONS, ids=[op["python"] for op in OPERATIONS])
def test_each_operation_calls_its_route(op: dict[str, Any]) -> None:
    client, session = recording_client()
    args, kwargs = SAMPLE_CALLS[op["python"]]
    result = getattr(client, op["python"])(*args, **kwargs)
    if inspect.isgenerator(result):
        list(result)
    method, path, key = session.sent[-1]
    assert method == op["method"] and path_pattern(op["path"]).match(path), (method, path)
    if op.get("idempotency_key") == "per_call":
        assert key is not None and key.startswith(CONTRACT["retry"]["generated_key_prefix"])
    elif op["method"] == "GET":
        assert key is None


def test_a_holds_capture_and_release_use_the_shared_per_hold_keys() -> None:
    prefixes = {op["python"]: op["key_prefix"] for op in OPERATIONS
                if op.get("idempotency_key") == "per_hold"}
    client, session = recording_client()
    client.hold("org_a", credits=5).capture()
    client.hold("org_a", credits=5).release()
    assert [key for _, path, key in session.sent if path.startswith("/v1/holds/")] == [
        f"{prefixes['capture_hold']}hold_1", f"{prefixes['release_hold']}hold_1"]


def test_error_classes_one_per_shared_code_and_by_status() -> None:
    for entry in CONTRACT["errors"]:
        cls = getattr(kinde_credits_client, entry["python"])
        error = error_for(entry["status"], {"error": {"code": entry["code"], "message": "m"}})
        assert type(error) is cls, entry["code"]
        assert (error.status, error.code, error.message) == (entry["status"], entry["code"], "m")
    assert set(_BY_CODE) == {e["code"] for e in CONTRACT["errors"]}
    fallbacks = {int(status): code for status, code in CONTRACT["status_fallbacks"].items()}
    assert {status: cls for status, cls in _BY_STATUS.items()} == {
        status: _BY_CODE[code] for status, code in fallbacks.items()}
    exhausted = getattr(kinde_credits_client, CONTRACT["exhausted_retries"]["python"])
    for status in CONTRACT["retry"]["statuses"]:
        assert type(error_for(status, {})) is exhausted
    transport = CONTRACT["transport_failure"]
    assert issubclass(getattr(kinde_credits_client, transport["python"]), CreditsError)


def test_every_error_code_the_openapi_document_names_is_listed() -> None:
    known = {e["code"] for e in CONTRACT["errors"]} | set(CONTRACT["exhausted_retries"]["codes"])
    statuses: set[str] = set()
    for methods in OPENAPI["paths"].values():
        for method, op in methods.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                statuses.add(status)
                if status[0] not in "45":
                    continue
                description = re.sub(r"error\.[a-z_]+", "", response.get("description", ""))
                for code in re.findall(r"\b[a-z]+_[a-z_]+\b|^[a-z]+(?=:)", description):
                    assert code in known, f"{status}: {code} is not in operations.json"
    assert {str(e["status"]) for e in CONTRACT["errors"]} <= statuses


def test_the_retry_rules_and_defaults_are_the_shared_ones() -> None:
    retry = CONTRACT["retry"]
    assert set(client_module.RETRY_STATUSES) == set(retry["statuses"])
    defaults = {name: p.default for name, p in
                inspect.signature(CreditsClient.__init__).parameters.items()}
    assert (defaults["max_retries"], defaults["backoff"], defaults["max_backoff"],
            defaults["timeout"]) == (retry["max_retries"], retry["backoff_seconds"],
                                     retry["max_backoff_seconds"], retry["timeout_seconds"])
