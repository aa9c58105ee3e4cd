"""The emulated clock: UTC time that may run faster than real time and can be advanced by hand."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class EmulatorClock:
    """`now() = start + (wall elapsed) * time_scale + manual advances`; time_scale 0 freezes it."""

    def __init__(
        self,
        start: datetime | None = None,
        time_scale: float = 1.0,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.time_scale = time_scale
        self._start = start or datetime.now(UTC)
        self._wall = wall
        self._wall_at_start = wall()
        self._advanced = 0.0

    def now(self) -> datetime:
        elapsed = (self._wall() - self._wall_at_start) * self.time_scale + self._advanced
        return self._start + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._advanced += seconds
        return self.now()

    def restart_at(self, instant: datetime) -> None:
        """Continue from `instant` if it is later than now (a restarted emulator never goes back in time)."""
        if instant > self.now():
            self._start, self._wall_at_start, self._advanced = instant, self._wall(), 0.0
