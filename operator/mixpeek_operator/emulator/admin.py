"""A small synchronous client of the emulator's admin API (/_emulator), for tests and scripts.

with EmulatorAdmin("http://127.0.0.1:8099") as admin:
    admin.reset()
    admin.set_faults(endpoint="create", rate_limit_count=2, retry_after_seconds=3)
    ...
    assert admin.request_counts()["endpoints"]["create"] == 3
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, cast

import httpx

ADMIN_PREFIX = "/_emulator"


Rows = list[dict[str, Any]]


class EmulatorAdmin:
    def __init__(self, base_url: str, *, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EmulatorAdmin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Every admin endpoint answers a JSON object; an error status raises httpx.HTTPStatusError."""
        response = self._client.request(method, ADMIN_PREFIX + path, json=body, params=params)
        response.raise_for_status()
        return cast("dict[str, Any]", response.json())

    # --- emulator-wide ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Back to the seed: no syncs, no faults, no request counts, the configured behaviour."""
        self._call("POST", "/reset")

    def now(self) -> str:
        """The emulated clock, ISO-8601."""
        return str(self._call("GET", "/clock")["now"])

    def advance(self, seconds: float) -> int:
        """Move the emulated clock forward and run what became due; returns the number of runs."""
        return int(self._call("POST", "/clock/advance", {"seconds": seconds})["runs"])

    def run_due(self) -> int:
        return int(self._call("POST", "/run-due")["runs"])

    def behaviour(self) -> dict[str, Any]:
        return self._call("GET", "/behaviour")

    def set_behaviour(self, **fields: Any) -> dict[str, Any]:
        return self._call("PATCH", "/behaviour", fields)

    # --- faults and traffic ----------------------------------------------------------------

    def faults(self) -> Rows:
        return cast(Rows, self._call("GET", "/faults")["rules"])

    def set_faults(self, *rules: dict[str, Any], **rule: Any) -> Rows:
        """Replace every fault rule: pass rule dicts, or one rule's fields as keywords."""
        body = [*rules, rule] if rule else list(rules)
        return cast(Rows, self._call("PUT", "/faults", body)["rules"])

    def add_fault(self, **rule: Any) -> Rows:
        return cast(Rows, self._call("POST", "/faults", rule)["rules"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def request_counts(self) -> dict[str, Any]:
        """{"total", "endpoints": {"create": n, ...}, "endpoint_status", "methods", "statuses"}."""
        return self._call("GET", "/requests/counts")

    def request_log(self, limit: int | None = None) -> Rows:
        params = {"limit": limit} if limit else None
        return cast(Rows, self._call("GET", "/requests", params=params)["requests"])

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    # --- syncs, out of band ----------------------------------------------------------------

    def list_syncs(self, *, namespace_id: str | None = None, bucket_id: str | None = None) -> Rows:
        params = {k: v for k, v in {"namespace_id": namespace_id, "bucket_id": bucket_id}.items() if v}
        return cast(Rows, self._call("GET", "/syncs", params=params)["results"])

    def get_sync(self, sync_id: str) -> dict[str, Any]:
        return self._call("GET", f"/syncs/{sync_id}")

    def patch_sync(self, sync_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/syncs/{sync_id}", fields)

    def delete_sync(self, sync_id: str) -> None:
        self._call("DELETE", f"/syncs/{sync_id}")

    def pause_sync(self, sync_id: str, *, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/syncs/{sync_id}/pause", {"reason": reason})

    def resume_sync(self, sync_id: str) -> dict[str, Any]:
        return self._call("POST", f"/syncs/{sync_id}/resume")

    def fail_sync(
        self, sync_id: str, message: str, *, count: int = 1, when: Literal["now", "next_runs"] = "now"
    ) -> dict[str, Any]:
        """`now`: record `count` failures (FAILED, last_error; auto-suspends at the threshold).
        `next_runs`: the next `count` runs fail with `message`."""
        body = {"message": message, "count": count, "when": when}
        return self._call("POST", f"/syncs/{sync_id}/fail", body)

    def bump_counters(self, sync_id: str, **increments: int) -> dict[str, Any]:
        return self._call("POST", f"/syncs/{sync_id}/counters", increments)
