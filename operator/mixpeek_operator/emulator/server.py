"""Serving the emulator with uvicorn on loopback: in the foreground (the CLI) or in a thread (tests)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType

import uvicorn
from fastapi import FastAPI

from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.state import Emulator

GRACEFUL_SHUTDOWN_SECONDS = 3


class _Server(uvicorn.Server):
    on_listening: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_listening is not None:
            self.on_listening()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM shut down gracefully and the process exits 0 (uvicorn would re-raise them)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._request_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_exit(self, _signum: int, _frame: FrameType | None) -> None:
        self.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before serving, so port 0 resolves to a real port we can report."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


class EmulatorServer:
    """One emulator served over HTTP. Also a context manager that serves it in a background thread."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        access_log: bool = False,
    ) -> None:
        self.app: FastAPI = create_app(config)
        self._socket = bind_socket(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        uvicorn_config = uvicorn.Config(
            self.app,
            log_level=log_level,
            access_log=access_log,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,  # do not wait out injected hangs
        )
        self._server = _Server(uvicorn_config)
        self._thread: threading.Thread | None = None

    @property
    def emulator(self) -> Emulator:
        emulator: Emulator = self.app.state.emulator
        return emulator

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve(self, on_listening: Callable[[], None] | None = None) -> None:
        """Serve in this thread until stop() or SIGINT/SIGTERM; `on_listening` runs once accepting."""
        self._server.on_listening = on_listening
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def stop(self) -> None:
        self._server.should_exit = True

    def __enter__(self) -> EmulatorServer:
        started = threading.Event()
        self._thread = threading.Thread(
            target=self.serve, args=(started.set,), name=f"mixpeek-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        while not started.wait(timeout=0.05):
            if not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError("the emulator stopped before it was listening")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._socket.close()
