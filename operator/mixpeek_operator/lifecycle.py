"""The operator's life cycle without kopf, for label shards (`--sharding-mode labels`).

With label shards kopf watches nothing of ours: each replica watches only its own objects, with
a server-side label selector kopf's watch does not have (coordination/label_shards.py). What
kopf would still do is start and stop the runtime, handle SIGTERM/SIGINT and serve `/healthz`,
and importing it (with aiohttp) costs each replica 22 MB of RSS: a tenth of a replica holding
10,000 objects, in the mode whose point is dividing memory by replicas. So this mode runs that
small life cycle itself, with the same order and answers as kopf's:

- the runtime starts first (it waits until creates are admitted), then `/healthz` serves, so a
  ready pod is an admitted one;
- `/healthz` answers 200 with the probe's JSON (`{"engine": {...}}`), or 500 once a background
  task could not be restarted (the kubelet then restarts the pod);
- SIGTERM or SIGINT stops the runtime (work stops, then the member Lease is released, so the
  assigner moves this replica's objects at once) and the process exits 0.

Every other mode runs under kopf (handlers.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal

from mixpeek_operator.runtime import OperatorRuntime, Unhealthy

log = logging.getLogger("mixpeek_operator.lifecycle")

_REQUEST_TIMEOUT = 10.0  # seconds a probe may take to send its request line and headers
_MAX_HEAD = 16 * 1024


def run_until_signalled(runtime: OperatorRuntime, health_port: int) -> None:
    asyncio.run(serve(runtime, health_port, stop=None))


async def serve(runtime: OperatorRuntime, health_port: int, stop: asyncio.Event | None) -> None:
    """Start the runtime, serve `/healthz` on `health_port` (0: none) until `stop` is set (or, when
    it is None, until SIGTERM/SIGINT), then stop the runtime."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    server: asyncio.Server | None = None
    try:
        # A signal while starting (the admission check may wait) stops the start too.
        starting = asyncio.ensure_future(runtime.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return
        starting.result()  # a failed start ends the process with its error
        if health_port:
            server = await start_health_server(runtime, "0.0.0.0", health_port)
        log.info("operator started (label shards)")
        await stop.wait()
        log.info("stopping the operator")
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
        await runtime.stop()


async def start_health_server(runtime: OperatorRuntime, host: str, port: int) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body = _health_answer(runtime, head)
            writer.write(_response(status, body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a probe that hung up or never finished its request gets no answer
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port, limit=_MAX_HEAD)


def _health_answer(runtime: OperatorRuntime, head: bytes) -> tuple[int, bytes]:
    method, _, rest = head.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if path != b"/healthz":
        return 404, b"not found\n"
    if method != b"GET":
        return 405, b"method not allowed\n"
    try:
        return 200, json.dumps({"engine": runtime.health()}).encode()
    except Unhealthy as exc:
        return 500, f"{exc}\n".encode()


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}[status]
    kind = "application/json" if status == 200 else "text/plain; charset=utf-8"
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {kind}", f"Content-Length: {len(body)}"]
    return "\r\n".join([*head, "Connection: close", "", ""]).encode() + body
