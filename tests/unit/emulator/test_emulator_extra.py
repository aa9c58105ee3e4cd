"""The emulator is an optional extra: without FastAPI/uvicorn the command says how to get them."""

from __future__ import annotations

import sys

import pytest

from mixpeek_operator.cli import main


@pytest.mark.parametrize("absent", ["fastapi", "uvicorn"])
def test_the_emulator_command_names_the_missing_extra(
    absent: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, absent, None)  # what `import` sees when it is not installed
    assert main(["emulator", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert f"{absent} not installed" in error
    assert "pip install 'mixpeek-operator[emulator]'" in error
