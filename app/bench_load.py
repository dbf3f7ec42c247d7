"""Load for `kinde-credits bench`: `wrk` with a generated Lua script, or a Python fallback.

A `Load` says what to send: a method, paths (request *n* of a connection goes to the next path
in turn, so 16 paths spread the load over 16 wallets), one body or a file of bodies (one per
line, each sent once: signed webhook deliveries with unique event ids), headers, and whether
each request gets its own `Idempotency-Key`. `run_load` drives CONNECTIONS keep-alive
connections for a number of seconds and returns requests/s with p50/p99 latency.

wrk (`/usr/bin/wrk`, or `wrk` on PATH) is preferred: it is C, so the generator costs the
server little CPU. Its Lua `done` hook prints the figures on one line we parse. Without wrk (or
with BENCH_LOAD_GENERATOR=python), a multi-process Python generator (threads with `http.client`
connections) does the same job.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CONNECTIONS = 16
WRK_THREADS = 2
GENERATOR_PROCESSES = 2


@dataclass(frozen=True)
class Load:
    method: str
    paths: list[str]
    body: str | None = None
    bodies_file: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotency_keys: bool = False
    cycle_bodies: bool = False  # reuse bodies when they run out (for handlers keeping no ids)


@dataclass(frozen=True)
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    generator: str


def wrk_path() -> str | None:
    """wrk, unless BENCH_LOAD_GENERATOR=python asks for the fallback (to compare the two)."""
    if os.environ.get("BENCH_LOAD_GENERATOR", "").lower() == "python":
        return None
    return shutil.which("wrk") or (shutil.which("wrk", path="/usr/bin"))


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def _lua_script(load: Load, threads: int) -> str:
    paths = ", ".join(_lua_string(p) for p in load.paths)
    headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in load.headers.items())
    body = _lua_string(load.body) if load.body is not None else "nil"
    bodies = _lua_string(str(load.bodies_file)) if load.bodies_file else "nil"
    prefix = uuid.uuid4().hex[:12]
    return f"""
local paths = {{{paths}}}
local headers = {{{headers}}}
local body = {body}
local bodies_file = {bodies}
local threads = {threads}
local keys = {"true" if load.idempotency_keys else "false"}
local cycle = {"true" if load.cycle_bodies else "false"}
local next_tid = 0
local mine = nil
local sent = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  if bodies_file then
    mine = {{}}
    local n = 0
    for line in io.lines(bodies_file) do
      if n % threads == tid then table.insert(mine, line) end
      n = n + 1
    end
  end
end

function request()
  sent = sent + 1
  local this_body = body
  if mine then
    if cycle then
      this_body = mine[((sent - 1) % #mine) + 1]
    elseif sent > #mine then
      -- every unique body is used up: stop this thread rather than send a duplicate
      wrk.thread:stop()
      this_body = mine[#mine]
    else
      this_body = mine[sent]
    end
  end
  local h = headers
  if keys then
    h = {{}}
    for k, v in pairs(headers) do h[k] = v end
    h["Idempotency-Key"] = "{prefix}-" .. tid .. "-" .. sent
  end
  local path = paths[((sent * threads + tid) % #paths) + 1]
  return wrk.format("{load.method}", path, h, this_body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %.1f %.1f\\n", summary.requests,
    summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _run_wrk(wrk: str, base_url: str, load: Load, seconds: float) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua_script(load, WRK_THREADS))
    try:
        out = subprocess.run(
            [wrk, "-t", str(WRK_THREADS), "-c", str(CONNECTIONS),
             "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "--latency",
             "-s", script.name, base_url],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKRESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    requests, duration_us, status_errors, socket_errors = (int(x) for x in line.split()[1:5])
    p50_us, p99_us = (float(x) for x in line.split()[5:7])
    return LoadResult(
        requests_per_second=requests / (duration_us / 1e6) if duration_us else 0.0,
        p50_ms=p50_us / 1000, p99_ms=p99_us / 1000, requests=requests,
        errors=status_errors + socket_errors, generator="wrk",
    )


# -- the Python fallback -------------------------------------------------------------------


def _generate(port: int, seconds: float, threads: int, first_thread: int, total_threads: int,
              load: Load) -> dict[str, object]:
    """One generator process: `threads` keep-alive connections for `seconds`."""
    bodies: list[str] = []
    if load.bodies_file is not None:
        bodies = load.bodies_file.read_text().splitlines()
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    prefix = uuid.uuid4().hex[:12]

    def worker(i: int) -> None:
        tid = first_thread + i
        mine = bodies[tid::total_threads] if bodies else []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = 0
        while time.monotonic() < stop_at:
            sent += 1
            if bodies:
                if load.cycle_bodies:
                    body: str | None = mine[(sent - 1) % len(mine)]
                elif sent > len(mine):
                    break
                else:
                    body = mine[sent - 1]
            else:
                body = load.body
            headers = dict(load.headers)
            if load.idempotency_keys:
                headers["Idempotency-Key"] = f"{prefix}-{tid}-{sent}"
            path = load.paths[(sent * total_threads + tid) % len(load.paths)]
            started = time.perf_counter()
            conn.request(load.method, path, body=body.encode() if body else None,
                         headers=headers)
            response = conn.getresponse()
            response.read()
            latencies[i].append(time.perf_counter() - started)
            if not 200 <= response.status < 300:
                errors[i] += 1
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"latencies": [x for lst in latencies for x in lst], "errors": sum(errors),
            "elapsed": time.perf_counter() - started}


def _run_python(base_url: str, load: Load, seconds: float) -> LoadResult:
    port = int(base_url.rsplit(":", 1)[1])
    per_process = CONNECTIONS // GENERATOR_PROCESSES
    spec = json.dumps({"method": load.method, "paths": load.paths, "body": load.body,
                       "bodies_file": str(load.bodies_file) if load.bodies_file else None,
                       "headers": load.headers, "idempotency_keys": load.idempotency_keys,
                       "cycle_bodies": load.cycle_bodies})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.bench_load", "--port", str(port), "--seconds",
             str(seconds), "--threads", str(per_process), "--first-thread",
             str(n * per_process), "--total-threads", str(CONNECTIONS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for n in range(GENERATOR_PROCESSES)
    ]
    latencies: list[float] = []
    errors = 0
    elapsed = 0.0
    for proc in procs:
        out, _ = proc.communicate(spec, timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError("load generator failed")
        part = json.loads(out)
        latencies.extend(part["latencies"])
        errors += part["errors"]
        elapsed = max(elapsed, part["elapsed"])
    if not latencies:
        return LoadResult(0.0, 0.0, 0.0, 0, errors, "python")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return LoadResult(len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000,
                      len(latencies), errors, "python")


def run_load(base_url: str, load: Load, seconds: float) -> LoadResult:
    """Requests/s and latency for `load` against `base_url`, for about `seconds`."""
    wrk = wrk_path()
    if wrk is not None:
        return _run_wrk(wrk, base_url, load, seconds)
    return _run_python(base_url, load, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.bench_load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--first-thread", type=int, required=True)
    parser.add_argument("--total-threads", type=int, required=True)
    args = parser.parse_args(argv)
    spec = json.loads(sys.stdin.read())
    load = Load(method=spec["method"], paths=spec["paths"], body=spec["body"],
                bodies_file=Path(spec["bodies_file"]) if spec["bodies_file"] else None,
                headers=spec["headers"], idempotency_keys=spec["idempotency_keys"],
                cycle_bodies=spec["cycle_bodies"])
    print(json.dumps(_generate(args.port, args.seconds, args.threads, args.first_thread,
                               args.total_threads, load)))


if __name__ == "__main__":
    main()
