"""The background worker loop: expiry sweeps now, outbox delivery as it is added.

Runs as `kinde-credits worker` (and as a child of `kinde-credits serve`). Every step is safe to
run in several workers at once: sweeps lock each wallet, outbox rows are claimed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.bootstrap import Container

log = logging.getLogger("kinde_credits.worker")

# Steps run each pass: (name, function(container) -> amount of work done).
Step = Callable[["Container"], int]


def default_steps() -> list[tuple[str, Step]]:
    return [
        ("outbox", lambda c: c.dispatcher.run_once()),
        # Right after the outbox: a purchase it just settled lets the one that waited go.
        ("auto_recharge", lambda c: c.deferred_recharges.run_due()),
        # Period ends before generic sweeps, so caps apply at each end in order.
        ("plan_periods", lambda c: c.plans.run_due()),
        ("sweep", lambda c: c.ledger.sweep_due()),
        ("kinde_parked", lambda c: c.webhooks.retry_parked()),
    ]


def run_worker(
    container: Container,
    *,
    once: bool = False,
    interval: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
    steps: list[tuple[str, Step]] | None = None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    steps = steps or default_steps()
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
