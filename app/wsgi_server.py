"""Production serving: gunicorn run in-process, so `kinde-credits serve` is one command.

Threaded workers (gthread) suit this service: requests are short and mostly wait on the
database. Each worker process builds its own container (engine pool) after the fork.

`server_defaults` picks processes and threads per database when `serve` is given none. Both
start at 2 processes x 8 threads (the long-standing default); `kinde-credits bench` measures
the service under exactly these settings (docs/benchmarks.md), so a change here shows there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gunicorn.app.base import BaseApplication


class ServerSettings(NamedTuple):
    workers: int
    threads: int


# Per database family (the URL's scheme before any "+driver").
SERVER_DEFAULTS: dict[str, ServerSettings] = {
    "sqlite": ServerSettings(workers=2, threads=8),
    "postgresql": ServerSettings(workers=2, threads=8),
}


def server_defaults(database_url: str) -> ServerSettings:
    """Processes and threads for a database URL when the operator chose none."""
    family = database_url.split(":", 1)[0].split("+", 1)[0]
    if family == "postgres":
        family = "postgresql"
    return SERVER_DEFAULTS.get(family, SERVER_DEFAULTS["postgresql"])


KEEPALIVE_SECONDS = 5


def worker_connections(threads: int) -> int:
    """gunicorn's per-worker connection cap for `threads` threads.

    The gthread worker keeps a connection alive only while fewer than
    `worker_connections - threads` idle ones are parked in its poller, and stops accepting
    once `worker_connections` are open (busy, idle or waiting for a first request). With the
    cap at `threads` there is no room for an idle one at all: gunicorn warns "No keepalived
    connections can be handled" and answers every request with `Connection: close`.

    One idle slot per thread: idle connections wait in the poller, not on a thread, and at
    most `threads` of them are kept, so however many clients sit idle the worker can still
    accept `threads` connections for its threads to serve (a further idle one is closed after
    its answer rather than kept). The cap also bounds how many connections one worker takes:
    a burst of clients beyond it goes to the other workers.
    """
    return 2 * threads


def _create_app() -> Any:
    from app import create_app

    return create_app()


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any], app_factory: Callable[[], Any]) -> None:
        self.options = options
        self.app_factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app_factory()


def run_gunicorn(
    *, host: str, port: int, workers: int, threads: int, access_log: bool = False,
    app_factory: Callable[[], Any] = _create_app,
) -> None:
    """Serve until stopped. `app_factory` builds the WSGI app in each worker; the bench
    passes its own (the service plus a no-op route, or the least-work handler) so every
    side of a comparison runs under these very options."""
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": KEEPALIVE_SECONDS,
        # Idle keep-alive connections close after `keepalive` seconds (see
        # `worker_connections`).
        "worker_connections": worker_connections(threads),
        # Tokens travel in headers, never in URLs, so the access log holds no secrets.
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        # gunicorn (>= 25.1) opens a control socket for `gunicornc` at one fixed path per user
        # ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl): every instance on a host
        # would bind, and on exit delete, the same one. Nothing here uses it: none at all.
        "control_socket_disable": True,
    }
    _Gunicorn(options, app_factory).run()
