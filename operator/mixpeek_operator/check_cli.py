"""`mixpeek-operator check`: can this key reach Mixpeek? One line of answer, exit 0 or 1.

The chart's `helm test` hook runs it in a Pod with the default credentials Secret's keys as
environment variables (the key never appears on a command line), so a wrong key, namespace,
base URL or a network path blocked by a policy shows up at install time, not as Stalled
objects later. It lists the syncs of one bucket, the call the operator makes most.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL

ENV_API_KEY = "MIXPEEK_API_KEY"
ENV_NAMESPACE = "MIXPEEK_NAMESPACE"
ENV_BASE_URL = "MIXPEEK_BASE_URL"
# Where the operator's own fallback base URL and default Secret come from (run_cli's env).
ENV_OPERATOR_BASE_URL = "MIXPEEK_OPERATOR_MIXPEEK_BASE_URL"
ENV_SECRET = "MIXPEEK_OPERATOR_DEFAULT_CREDENTIALS_SECRET"
# Listed when no bucket is given: only reachability, the key and the namespace are checked.
PROBE_BUCKET = "mixpeek-operator-check"


class CheckFailed(Exception):
    """The one-line reason the check failed."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"List the syncs of a bucket with the API key in ${ENV_API_KEY} (the Secret's apiKey), "
        f"the Mixpeek namespace in ${ENV_NAMESPACE} and the URL in ${ENV_BASE_URL} "
        f"(else ${ENV_OPERATOR_BASE_URL}, else {DEFAULT_MIXPEEK_BASE_URL}). "
        "Prints one line; exits 1 when Mixpeek cannot be reached or refuses the key."
    )
    parser.add_argument(
        "--bucket",
        default="",
        help="bucket whose syncs to list; without it a 404 for a probe bucket counts as reached",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")


def run(args: argparse.Namespace) -> int:
    try:
        print(f"ok: {asyncio.run(check(args.bucket, args.timeout))}")
    except CheckFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


async def check(bucket: str, request_timeout: float) -> str:
    import httpx

    from mixpeek_operator import mixpeek

    secret = _env(ENV_SECRET) or "the credentials Secret"
    api_key = _env(ENV_API_KEY)
    if not api_key:
        raise CheckFailed(f"no API key: {secret} has no 'apiKey' key, or does not exist")
    namespace = _env(ENV_NAMESPACE)
    if not namespace:
        raise CheckFailed(f"no Mixpeek namespace: {secret} has no 'namespace' key")
    base_url = (_env(ENV_BASE_URL) or _env(ENV_OPERATOR_BASE_URL) or DEFAULT_MIXPEEK_BASE_URL).rstrip("/")
    where = f"Mixpeek at {base_url} (namespace {namespace})"
    try:
        client = mixpeek.MixpeekClient(
            api_key,
            namespace,
            base_url=base_url,
            timeout=httpx.Timeout(request_timeout),
            # One attempt: its answer is the line printed (a retry would log in between).
            retry_policy=mixpeek.RetryPolicy(max_retries=0),
        )
    except ValueError as exc:
        raise CheckFailed(f"{secret}: {exc}") from None
    async with client:
        try:
            page = await client.list_syncs(bucket or PROBE_BUCKET, limit=1, include_total=True)
        except mixpeek.AuthenticationError as exc:
            raise CheckFailed(f"{where} rejected the API key of {secret} ({exc})") from None
        except mixpeek.PermissionDeniedError as exc:
            raise CheckFailed(f"{where} refused the API key of {secret} ({exc})") from None
        except mixpeek.NotFoundError as exc:
            if bucket:
                raise CheckFailed(f"{where}: bucket {bucket} not found ({exc})") from None
            return f"reached {where}, key accepted ({exc}; pass --bucket to check a bucket)"
        except mixpeek.APIStatusError as exc:
            raise CheckFailed(f"{where} answered {exc}") from None
        except mixpeek.MixpeekError as exc:
            raise CheckFailed(f"cannot reach {where}: {exc}") from None
    count = page.pagination.total if page.pagination.total is not None else len(page.results)
    return f"reached {where}, key accepted: bucket {bucket or PROBE_BUCKET} has {count} sync(s)"
