"""The start-up wait for BucketSync creates to be admitted (mixpeek_operator.admission)."""

from __future__ import annotations

from typing import Any

import pytest

from mixpeek_operator.admission import PROBE_OBJECT, creates_admitted, wait_until_creates_admitted
from mixpeek_operator.kube import (
    KubeConnectionError,
    KubeError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    Resource,
)

NOT_FOUND_YET = (
    "Resource kind mixpeek.com/v1alpha1, Kind=BucketSync not found. There can be a delay between "
    "when CustomResourceDefinitions are created and when they are available."
)


def refused() -> KubeError:
    return KubeError(503, "ServiceUnavailable", NOT_FOUND_YET, "POST /apis/mixpeek.com/v1alpha1/…")


class ScriptedApi:
    """Answers each dry run with the next scripted exception (None: the object, admitted)."""

    def __init__(self, *answers: KubeError | None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str | None, dict[str, Any]]] = []

    async def dry_run_create(
        self, resource: Resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append((namespace, body))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is not None:
            raise answer
        return body


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_waits_out_the_503_window_then_starts() -> None:
    api, clock = ScriptedApi(refused(), refused(), refused(), None), FakeClock()
    waited = await wait_until_creates_admitted(api, "media", clock=clock, sleep=clock.sleep)
    assert waited == pytest.approx(1.5)
    assert len(api.calls) == 4
    assert {namespace for namespace, _ in api.calls} == {"media"}
    assert api.calls[0][1] == PROBE_OBJECT


@pytest.mark.parametrize(
    "answer",
    [
        None,
        KubeInvalid(422, "Invalid", "spec.bucketId: Required value"),  # admitted, then validated
        KubeForbidden(403, "Forbidden", "cannot create bucketsyncs"),  # RBAC: nothing to wait for
        KubeNotFound(404, "NotFound", 'namespaces "media" not found'),
        KubeConnectionError(0, "ConnectError", "connection refused"),  # kopf's watches report it
    ],
)
async def test_any_answer_but_503_starts_at_once(answer: KubeError | None) -> None:
    api, clock = ScriptedApi(answer), FakeClock()
    assert await wait_until_creates_admitted(api, "media", clock=clock, sleep=clock.sleep) == 0.0
    assert len(api.calls) == 1


async def test_starts_anyway_after_the_limit_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    api, clock = ScriptedApi(refused()), FakeClock()
    waited = await wait_until_creates_admitted(api, "media", limit=10, clock=clock, sleep=clock.sleep)
    assert waited == pytest.approx(10.0)
    assert "still refused after 10s, starting anyway" in caplog.text


async def test_creates_admitted_names_the_refusal() -> None:
    assert await creates_admitted(ScriptedApi(refused()), "media") == (False, str(refused()))
