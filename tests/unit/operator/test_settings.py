"""The settings model (settings.py) is the one place a setting of `mixpeek-operator run` is
defined: the flags, the environment variables and the configuration's defaults come from it."""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
from typing import Any, Literal, get_args

import pytest

from mixpeek_operator import __version__
from mixpeek_operator.engine import EngineSettings
from mixpeek_operator.mixpeek import MixpeekClient
from mixpeek_operator.run_cli import configure_parser, operator_config
from mixpeek_operator.runtime import LeaderElectionConfig, OperatorConfig
from mixpeek_operator.settings import DEFAULTS, ENV_PREFIX, SecretRef, Setting, Settings, settings


def parse(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> Settings:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return Settings.from_args(parser.parse_args(list(argv)))


def test_the_version_flag_prints_the_package_version() -> None:
    """Regression: `mixpeek-operator --version` exited 2 (no such option)."""
    result = subprocess.run(
        [sys.executable, "-m", "mixpeek_operator", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"mixpeek-operator {__version__}\n", "")


def test_the_configuration_s_defaults_are_the_model_s() -> None:
    """Regression: the Mixpeek client's own default was 5 requests/s, burst 10, where the
    operator, the chart and the docs said 10/20."""
    engine, config = EngineSettings(), OperatorConfig()
    assert (engine.workers, engine.observe_interval, engine.backoff_cap) == (
        DEFAULTS.workers,
        DEFAULTS.observe_interval,
        DEFAULTS.backoff_cap,
    )
    client = inspect.signature(MixpeekClient).parameters
    assert (engine.rate_per_second, engine.burst) == (DEFAULTS.rate_limit, DEFAULTS.rate_burst)
    assert (client["rate_per_second"].default, client["burst"].default) == (10.0, 20)
    assert (client["rate_per_second"].default, client["burst"].default) == (
        engine.rate_per_second,
        engine.burst,
    )
    assert config.engine == engine
    assert (config.namespaces, config.default_secret, config.base_url) == (
        DEFAULTS.namespaces,
        DEFAULTS.default_credentials_secret,
        DEFAULTS.mixpeek_base_url,
    )
    assert (config.metrics_port, config.health_port, config.log_level, config.log_format) == (
        DEFAULTS.metrics_port,
        DEFAULTS.health_port,
        DEFAULTS.log_level,
        DEFAULTS.log_format,
    )
    election = LeaderElectionConfig(namespace="ops", identity="me")
    timings = election.timings
    assert (election.lease_name, timings.lease_duration, timings.renew_deadline, timings.retry_period) == (
        DEFAULTS.leader_election_id,
        DEFAULTS.leader_election_lease_duration,
        DEFAULTS.leader_election_renew_deadline,
        DEFAULTS.leader_election_retry_period,
    )


def test_no_flag_and_no_variable_reads_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch, {}) == DEFAULTS == Settings()


@pytest.mark.parametrize("mode", ["--sharding", "--leader-election"])
def test_a_replica_identity_is_the_engine_s_replica(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """It names the replica in the Mixpeek User-Agent (which replica wrote what, at the remote)."""
    election = ("--leader-election-namespace", "ops", "--leader-election-identity", "shard-1")
    config = operator_config(parse(monkeypatch, {}, mode, *election))
    assert config.leader_election is not None
    assert config.engine.replica == config.leader_election.identity == "shard-1"
    assert operator_config(parse(monkeypatch, {})).engine.replica is None  # alone: no identity


def other_value(setting: Setting) -> tuple[str, Any]:
    """A value other than the default, as the environment spells it and as the setting reads it."""
    kind = setting.type
    if kind is bool:
        return "true", True
    if kind is int:
        return "7", 7
    if kind is float:
        return "2.5", 2.5
    if kind == tuple[str, ...]:
        return "team-a,team-b", ("team-a", "team-b")
    if kind == SecretRef | None:
        return "ops/mixpeek-default", ("ops", "mixpeek-default")
    if getattr(kind, "__origin__", None) is Literal:
        (other,) = [choice for choice in get_args(kind) if choice != setting.default]
        return other, other
    return "other", "other"


@pytest.mark.parametrize("setting", [s for s in settings() if s.spec.env_var], ids=lambda s: s.name)
def test_each_variable_sets_its_setting_and_its_flag_wins(
    setting: Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert setting.spec.env_var is not None
    spelled, value = other_value(setting)
    assert value != setting.default
    read = parse(monkeypatch, {setting.spec.env_var: spelled})
    assert read == Settings(**{**vars(DEFAULTS), setting.name: value})
    if setting.type == tuple[str, ...]:
        return  # repeatable: a flag adds to the variable's list
    flag = setting.spec.flags[-1]
    argv = [f"--no-{flag[2:]}"] if setting.type is bool else [flag, "ops/given"]
    if setting.type in (int, float):
        argv[1] = "3"
    elif getattr(setting.type, "__origin__", None) is Literal:
        argv[1] = str(setting.default)
    assert getattr(parse(monkeypatch, {setting.spec.env_var: spelled}, *argv), setting.name) != value


def test_flags_and_variables_are_each_one_setting_s() -> None:
    flags = [flag for setting in settings() for flag in setting.spec.flags]
    variables = [setting.spec.env_var for setting in settings() if setting.spec.env_var]
    assert len(flags) == len(set(flags))
    assert len(variables) == len(set(variables))
    assert all(variable.startswith(ENV_PREFIX) for variable in variables)
    # Only the Lease identity has no variable: it is the pod's name ($POD_NAME).
    assert [s.name for s in settings() if not s.spec.env_var] == ["leader_election_identity"]
