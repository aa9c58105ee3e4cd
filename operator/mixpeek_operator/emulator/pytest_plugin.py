"""Pytest fixtures for tests that use the emulator.

Load them with `pytest_plugins = ["mixpeek_operator.emulator.pytest_plugin"]`.

- `emulator_config`: override it in a test module to change the seed, clock or behaviour.
  The default freezes the emulated clock at FROZEN_START, so time moves only when a test
  calls `emulator.advance(...)` (or the admin API's /clock/advance).
- `emulator_app`, `emulator`: the ASGI app and its state.
- `emulator_client`: an httpx.AsyncClient on the app in process, already sending the
  default seed's API key and namespace.
- `served_emulator`: the same app served by uvicorn on a free loopback port (real HTTP).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.server import EmulatorServer
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.testing import FROZEN_START, asgi_client


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(time_scale=0, start_time=FROZEN_START)


@pytest.fixture
def emulator_app(emulator_config: EmulatorConfig) -> FastAPI:
    return create_app(emulator_config)


@pytest.fixture
def emulator(emulator_app: FastAPI) -> Emulator:
    state: Emulator = emulator_app.state.emulator
    return state


@pytest.fixture
async def emulator_client(emulator_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(emulator_app) as client:
        yield client


@pytest.fixture
def served_emulator(emulator_config: EmulatorConfig) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_config) as server:
        yield server
