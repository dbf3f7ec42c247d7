"""Write the service's OpenAPI document (what `GET /openapi.json` answers) to a file.

The clients are typed from it: `clients/openapi.json` is the committed copy that the TypeScript
types are generated from and that `clients/operations.json` is checked against. Builds the app
in-process (local mode, a throwaway SQLite database); nothing is served and nothing is written
but the output file.

    python scripts/dump_openapi.py                 # writes clients/openapi.json
    python scripts/dump_openapi.py --check         # exit 1 when the committed copy is stale
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "clients" / "openapi.json"


def build_document() -> dict[str, Any]:
    """The document exactly as the running service serves it."""
    sys.path.insert(0, str(ROOT))
    from app import create_app
    from app.settings import DEFAULT_CATALOG, Settings

    with tempfile.TemporaryDirectory() as var:
        settings = Settings(database_url=f"sqlite:///{Path(var) / 'credits.db'}",
                            catalog_path=DEFAULT_CATALOG, var_dir=Path(var), run_worker=False)
        app = create_app(settings)
        try:
            response = app.test_client().get("/openapi.json")
            if response.status_code != 200 or not isinstance(response.json, dict):
                raise RuntimeError(f"GET /openapi.json answered {response.status_code}")
            return response.json
        finally:
            app.extensions["kinde_credits"].close()


def render(document: dict[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, a final newline (diffs stay readable)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true",
                        help="compare with --output instead of writing it")
    args = parser.parse_args(argv)
    text = render(build_document())
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python scripts/dump_openapi.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
