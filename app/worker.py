"""The background worker loop: expiry sweeps now, outbox delivery as it is added.

Runs as `kinde-credits worker` (and as a child of `kinde-credits serve`). Every step is safe to
run in several workers at once: sweeps lock each wallet, outbox rows are claimed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kinde_credits.worker")

# Steps run each pass: (name, function(container) -> amount of work done).
Step = Callable[[Any], int]


def default_steps() -> list[tuple[str, Step]]:
    from app.services.plans import run_plans
    from app.services.webhooks import retry_parked

    return [
        ("outbox", lambda c: c.dispatcher.run_once()),
        # Period ends before generic sweeps, so caps apply at each end in order.
        ("plan_periods", run_plans),
        ("sweep", lambda c: c.ledger.sweep_due()),
        ("kinde_parked", retry_parked),
    ]


def run_worker(
    container: Any,
    *,
    once: bool = False,
    interval: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
    steps: list[tuple[str, Step]] | None = None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    steps = steps or default_steps() + list(container.extras.get("worker_steps", []))
    while True:
        busy = 0
        for name, step in steps:
            try:
                busy += step(container)
            except Exception:  # one failing step must not stop the others
                log.exception("worker step %s failed", name)
        if once or should_stop():
            return
        if not busy:
            # Sleep in small slices so SIGTERM stops the worker promptly.
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not should_stop():
                time.sleep(min(0.1, interval))
