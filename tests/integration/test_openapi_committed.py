"""`clients/openapi.json`, which both clients are checked against and the TypeScript types are
generated from, is the document the service serves: regenerate it with
`python scripts/dump_openapi.py` when the API changes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_document_is_the_services() -> None:
    spec = importlib.util.spec_from_file_location("dump_openapi", ROOT / "scripts" /
                                                  "dump_openapi.py")
    assert spec is not None and spec.loader is not None
    dump = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dump)
    committed = (ROOT / "clients" / "openapi.json").read_text()
    assert committed == dump.render(dump.build_document()), (
        "clients/openapi.json is stale: run `python scripts/dump_openapi.py`, then "
        "`npm run generate` in clients/typescript, and commit both")
