"""The kube package's pure parts: `Resource` paths, and the one place a token file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixpeek_operator import handlers
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    EVENTS,
    LEASES,
    SECRETS,
    KubeConfigError,
    KubeConnection,
    Resource,
)
from mixpeek_operator.kube.config import TokenCache


@pytest.mark.parametrize(
    ("resource", "args", "path"),
    [
        (SECRETS, ("team", "creds"), "/api/v1/namespaces/team/secrets/creds"),
        (EVENTS, ("team",), "/api/v1/namespaces/team/events"),
        (LEASES, ("ops", "shard-a"), "/apis/coordination.k8s.io/v1/namespaces/ops/leases/shard-a"),
        (BUCKETSYNCS, (None,), "/apis/mixpeek.com/v1alpha1/bucketsyncs"),
        (BUCKETSYNCS, ("a", "b", "status"), "/apis/mixpeek.com/v1alpha1/namespaces/a/bucketsyncs/b/status"),
        (Resource("core", "v1", "pods"), ("x", "p q"), "/api/v1/namespaces/x/pods/p%20q"),
    ],
)
def test_a_resource_builds_core_and_group_paths(
    resource: Resource, args: tuple[str | None, ...], path: str
) -> None:
    assert resource.path(*args) == path


@pytest.mark.parametrize("segment", ["", ".", ".."])
def test_an_empty_or_dot_segment_is_refused_rather_than_addressing_the_collection(segment: str) -> None:
    with pytest.raises(ValueError, match="invalid path segment"):
        SECRETS.path("team", segment)


def test_api_version_of_core_and_group_kinds() -> None:
    assert (SECRETS.api_version, LEASES.api_version) == ("v1", "coordination.k8s.io/v1")
    assert BUCKETSYNCS.api_version == "mixpeek.com/v1alpha1"


def test_each_login_reads_a_rotated_token_file_afresh(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    connection = KubeConnection(server="https://127.0.0.1:6443", token_path=token_file)
    assert handlers.connection_info(connection).token == "first-token"
    token_file.write_text("rotated-token\n")  # the kubelet rotates a projected token in place
    assert handlers.connection_info(connection).token == "rotated-token"


def test_a_literal_token_wins_over_the_token_file(tmp_path: Path) -> None:
    connection = KubeConnection(server="https://h", token="literal", token_path=tmp_path / "absent")
    assert connection.read_token() == "literal"
    assert KubeConnection(server="https://h").read_token() is None


def test_the_client_rereads_a_token_file_once_per_ttl_or_when_told(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token")
    connection = KubeConnection(server="https://h", token_path=token_file)
    cache = TokenCache(ttl=3600)
    assert cache.token(connection) == "first-token"
    token_file.write_text("rotated-token")
    assert cache.token(connection) == "first-token"  # within the TTL: not read again
    cache.forget()  # after a 401
    assert cache.token(connection) == "rotated-token"


def test_an_unreadable_token_file_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    connection = KubeConnection(server="https://h", token_path=tmp_path / "gone")
    with pytest.raises(KubeConfigError, match=r"cannot read token file .*gone"):
        connection.read_token()
