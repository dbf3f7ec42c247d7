"""Servers for `kinde-credits bench`: the service and the least-work baseline, each under gunicorn.

`python -m app.bench_servers service|baseline --port P --workers W --threads T` runs one in the
foreground (gunicorn's master is that process, so its children are the serving workers). Both
go through `app.wsgi_server.run_gunicorn` with the same options; only the app differs:
- service: `create_app()` plus `GET /bench/noop`, a route added only here, in the bench's own
  server process, never to a production app, so no environment switch can expose it;
- baseline: `app.bench_baseline.create_baseline_app()`.
`ServerProcess` starts one from the bench, waits until it answers, reads its workers' peak
memory (VmHWM) and stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NOOP_PATH = "/bench/noop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_app() -> Any:
    from flask import jsonify
    from flask.typing import ResponseReturnValue

    from app import create_app

    app = create_app()

    @app.get(NOOP_PATH)
    def bench_noop() -> ResponseReturnValue:
        return jsonify(ok=True)

    return app


def _baseline_app() -> Any:
    from app.bench_baseline import create_baseline_app

    return create_baseline_app()


class ServerProcess:
    """One bench server subprocess (`kind` is "service" or "baseline")."""

    def __init__(self, kind: str, env: dict[str, str], workers: int, threads: int,
                 log_path: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.bench_servers", kind, "--port", str(self.port),
             "--workers", str(workers), "--threads", str(threads)],
            env=env, stdout=self._log, stderr=self._log,
        )
        self.log_path = log_path
        self._workers: list[int] = []

    def wait_ready(self, timeout: float = 60.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}{NOOP_PATH}", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"bench {self.kind} server did not start:\n{tail}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        return [int(child) for child in children]

    def peak_rss_mb(self) -> float:
        """The largest peak resident set (VmHWM) among the serving workers, in MiB."""
        peaks = [0.0]
        for pid in self.worker_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)

    def signal_stop(self) -> None:
        """Ask gunicorn for its quick shutdown (SIGINT): the bench has no requests to finish."""
        if self.process.poll() is None:
            self._workers = self.worker_pids()
            self.process.send_signal(signal.SIGINT)

    def stop(self) -> None:
        self.signal_stop()
        _wait_or_kill(self.process, timeout=30)  # gunicorn's own graceful_timeout is 20 s
        # A worker stuck in a request outlives a master killed after the timeout (seen once
        # under heavy load): end the ones this server started, by pid, if still ours.
        for pid in self._workers:
            try:
                if b"app.bench_servers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # already gone
        self._log.close()


def _wait_or_kill(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class WorkerProcess:
    """`kinde-credits worker` (outbox delivery, expiries) beside a bench service server."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env,
                                        stdout=self._log, stderr=self._log)

    def signal_stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.signal_stop()
        _wait_or_kill(self.process)
        self._log.close()


def stop_all(processes: list[ServerProcess | WorkerProcess]) -> None:
    """Stop several at once: signal all, then wait for each."""
    for process in processes:
        process.signal_stop()
    for process in processes:
        process.stop()


def main(argv: list[str] | None = None) -> None:
    from app.wsgi_server import run_gunicorn

    parser = argparse.ArgumentParser(prog="python -m app.bench_servers")
    parser.add_argument("kind", choices=["service", "baseline"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    sys.argv = [sys.argv[0]]  # gunicorn parses argv; give it nothing to misread
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    factory = _service_app if args.kind == "service" else _baseline_app
    run_gunicorn(host="127.0.0.1", port=args.port, workers=args.workers, threads=args.threads,
                 app_factory=factory)


if __name__ == "__main__":
    main()
