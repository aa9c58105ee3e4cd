"""Supervision of the operator's long-lived tasks: none of them may die silently.

Every background task (the observer's listing loops, the reconcile workers, the leader
elector, the shard coordinator's loops) is started through one `Supervisor`. When a task
raises an exception it did not expect, the supervisor logs it with its traceback, counts it
(`mixpeek_operator_task_restarts_total{task}`), waits an exponential backoff with full
jitter and runs it again: a transient bug costs one restart, not a replica that silently
stopped observing or campaigning.

A task that keeps crashing (`max_failures` crashes in a row, each within `healthy_after`
seconds of its start) is not restarted again: the supervisor records it as failed, which
fails the liveness endpoint (`/healthz`), so the kubelet restarts the pod and its restart
count tells the user. A task that returns normally is done (one-shot tasks), and
cancellation always ends a task (the owner is stopping it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mixpeek_operator.workqueue import Backoff

log = logging.getLogger("mixpeek_operator.supervision")


@dataclass(frozen=True)
class SupervisionPolicy:
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    # A run that lasted this long was healthy: the next crash starts the count again.
    healthy_after: float = 60.0
    # Crashes in a row (each within healthy_after of its start) before giving up (/healthz fails).
    max_failures: int = 6


class Supervisor:
    """Starts tasks that are restarted after a crash; `failed` names those it gave up on."""

    def __init__(
        self,
        policy: SupervisionPolicy | None = None,
        *,
        on_restart: Callable[[str], None] = lambda task: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or SupervisionPolicy()
        self._on_restart = on_restart
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.failed: dict[str, str] = {}  # task name -> the last error, for /healthz

    def healthy(self) -> bool:
        return not self.failed

    def spawn(self, name: str, run: Callable[[], Awaitable[None]], *, kind: str) -> asyncio.Task[None]:
        """Run `run()` in a supervised task named `name`; `kind` (a bounded set, e.g. "observer")
        labels the restart metric."""
        return asyncio.create_task(self._supervise(name, kind, run), name=name)

    async def _supervise(self, name: str, kind: str, run: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            started = self._clock()
            try:
                await run()
                return
            except Exception as exc:  # CancelledError is a BaseException: cancelling ends the task
                if self._clock() - started >= self.policy.healthy_after:
                    failures = 0
                failures += 1
                if failures >= self.policy.max_failures:
                    self.failed[name] = f"{type(exc).__name__}: {exc}"
                    log.critical(
                        "task %s crashed %d times in a row; giving up (the liveness probe now fails)",
                        name,
                        failures,
                        exc_info=True,
                        extra={"task": name},
                    )
                    return
                delay = self.policy.backoff.delay(failures, self._jitter())
                log.error(
                    "task %s crashed; restarting it in %.1fs",
                    name,
                    delay,
                    exc_info=True,
                    extra={"task": name},
                )
                self._on_restart(kind)
            await self._sleep(delay)
