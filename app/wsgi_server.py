"""Production serving: gunicorn run in-process, so `kinde-credits serve` is one command.

Threaded workers (gthread) suit this service: requests are short and mostly wait on the
database. Each worker process builds its own container (engine pool) after the fork.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from app import create_app

        return create_app()


def run_gunicorn(
    *, host: str, port: int, workers: int, threads: int, access_log: bool = False
) -> None:
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        # Tokens travel in headers, never in URLs, so the access log holds no secrets.
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
    }
    _Gunicorn(options).run()
