"""Leader election (active/standby): every replica wants one Lease; its holder is the leader.

client-go's leaderelection semantics through `LeaseHolder`: the leader reconciles while it
holds the Lease within the renew deadline, standbys watch and keep their caches warm, and a
standby takes over when the Lease is released or has expired by its own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from mixpeek_operator.coordination.holder import Callback, LeaseHolder, LeaseHook
from mixpeek_operator.coordination.lease import LeaseTimings
from mixpeek_operator.kube import KubeClient
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME: Final = "mixpeek-operator"


class LeaderElector:
    """Lead while holding the election Lease: `on_started_leading` when it is won,
    `on_stopped_leading` when it cannot be renewed (or on `stop()`, before the release)."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings | None = None,
        on_started_leading: Callback,
        on_stopped_leading: Callback,
        on_transition: Callable[[bool], None] | None = None,
        on_lease: LeaseHook | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.identity = identity
        self._on_transition = on_transition
        self.lease = LeaseHolder(
            kube,
            namespace=namespace,
            name=name,
            identity=identity,
            timings=timings or LeaseTimings(),
            on_acquired=on_started_leading,
            on_lost=on_stopped_leading,
            on_transition=self._leading_changed,
            on_lease=on_lease,
            supervisor=supervisor,
            task_kind="leader-election",
        )

    def is_leader(self) -> bool:
        """True while we hold the election Lease within the renew deadline of its last renewal."""
        return self.lease.held()

    def start(self) -> None:
        self.lease.start()

    async def stop(self) -> None:
        """Stop leading (the work ends first), then hand the Lease over so a standby leads at once."""
        await self.lease.stop()

    def _leading_changed(self, leading: bool) -> None:
        name = self.lease.lease_name
        if leading:
            log.info("became leader of %s as %s", name, self.identity, extra={"lease": name})
        else:
            log.warning("stopped leading %s", name, extra={"lease": name})
        if self._on_transition is not None:
            self._on_transition(leading)
