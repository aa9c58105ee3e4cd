"""Start only once the API server admits BucketSync creates.

Right after the chart installs the CRD together with its MutatingAdmissionPolicy, the API
server answers every BucketSync create it matches with 503 "Resource kind
mixpeek.com/v1alpha1, Kind=BucketSync not found. There can be a delay …": the policy plugin
needs the kind's schema, which it learns from the server's own /openapi/v3, polled every 5 s
(k8s.io/apiserver admission/plugin/policy/mutating/patch.typeConverterManager), and a 503 is
returned whatever the policy's failurePolicy. The operator's health endpoint (its startup and
readiness probes) is served only after this wait, so `helm install --wait` (and Argo CD's
health) returns once a user's `kubectl apply` is admitted. The check is a server-side dry run
(dryRun=All: nothing is stored, nothing is written) of an empty BucketSync: any answer other
than 503, even the 422 its empty spec earns after admission, means creates are admitted. An
unreachable API server is not waited for here (kopf's watches report it), and after
`limit` seconds the operator starts anyway, with a warning, rather than never.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from mixpeek_operator.constants import API_VERSION, KIND
from mixpeek_operator.kube import BUCKETSYNCS, JsonObject, KubeConnectionError, KubeError, Resource

log = logging.getLogger(__name__)

ADMISSION_WAIT_LIMIT = 90.0  # below the chart's startup probe budget (120 s)
PROBE_OBJECT: JsonObject = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"generateName": "mixpeek-operator-admission-check-"},
    "spec": {},
}


class DryRunCreator(Protocol):
    async def dry_run_create(
        self, resource: Resource, namespace: str | None, body: JsonObject
    ) -> JsonObject: ...


async def creates_admitted(kube: DryRunCreator, namespace: str) -> tuple[bool, str]:
    """(False, why) while the API server refuses BucketSync creates in `namespace` with 503."""
    try:
        await kube.dry_run_create(BUCKETSYNCS, namespace, PROBE_OBJECT)
    except KubeConnectionError:
        return True, ""
    except KubeError as exc:
        if exc.status == 503:
            return False, str(exc)
    return True, ""


async def wait_until_creates_admitted(
    kube: DryRunCreator,
    namespace: str,
    *,
    limit: float = ADMISSION_WAIT_LIMIT,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> float:
    """Wait while BucketSync creates are refused with 503; the seconds waited."""
    began = clock()
    announced = False
    while True:
        admitted, why = await creates_admitted(kube, namespace)
        waited = clock() - began
        if admitted:
            if announced:
                log.info("BucketSync creates admitted after %.1fs", waited)
            return waited
        if waited >= limit:
            log.warning("BucketSync creates still refused after %.0fs, starting anyway: %s", waited, why)
            return waited
        if not announced:
            log.info("waiting until the API server admits BucketSync creates: %s", why)
            announced = True
        await sleep(interval)
