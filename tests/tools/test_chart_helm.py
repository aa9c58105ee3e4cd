"""The Helm chart, rendered by the real helm binary: lint, defaults, both RBAC modes, the
env wiring into the operator's CLI, the values schema, and the CRD copy."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.k8sbuild import build_helm
from mixpeek_operator import check_cli, crd, run_cli
from mixpeek_operator.constants import FINALIZER, GROUP, PLURAL
from mixpeek_operator.settings import DEFAULTS, Settings, settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "mixpeek-operator"
RELEASE, RELEASE_NS = "rel", "ops"
Manifest = dict[str, Any]

# What the operator needs, per (apiGroup, resource): see the comments in templates/_helpers.tpl.
EXPECTED_RULES = {
    # create: only the start-up dry run (docs/admission.md); a policy refuses any other create.
    ("mixpeek.com", "bucketsyncs"): {"get", "list", "watch", "patch", "create"},
    ("mixpeek.com", "bucketsyncs/status"): {"patch"},
    ("", "secrets"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create"},
    # Leader election is on with one replica too; only in the release namespace (checked below).
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}
RBAC_MODES = {
    "cluster-wide": {},
    "namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "namespaces+default-secret": {
        "watchNamespaces": ["team-a", "team-b"],
        "credentials": {"defaultSecretName": "mixpeek-default"},
    },
}


@pytest.fixture(scope="session")
def helm() -> Path:
    return build_helm() / "helm"


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def values_args(values: dict[str, Any], tmp_path: Path) -> list[str]:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML
    return ["-f", str(path)]


@pytest.fixture
def render(helm: Path, tmp_path: Path) -> Any:
    def render(values: dict[str, Any] | None = None, *extra: str) -> list[Manifest]:
        args = ["template", RELEASE, str(CHART), "-n", RELEASE_NS, *values_args(values or {}, tmp_path)]
        out = run_helm(helm, *args, *extra).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return render


def only(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def container(manifests: list[Manifest]) -> Manifest:
    (operator,) = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def env_of(manifests: list[Manifest]) -> dict[str, str]:
    """The operator's settings: the env entries with a literal value (downward API entries are
    checked on their own)."""
    return {item["name"]: item["value"] for item in container(manifests)["env"] if "value" in item}


def watch_rbac(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """The Roles or RoleBindings for the watched namespaces (not the Lease's, always present)."""
    return [
        m for m in manifests if m["kind"] == kind and not m["metadata"]["name"].endswith("-leader-election")
    ]


def rules_of(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for manifest in manifests:
        if manifest["kind"] in ("Role", "ClusterRole"):
            for rule in manifest["rules"]:
                yield manifest, rule


# --- lint and defaults -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", RBAC_MODES)
def test_helm_lint_is_clean(helm: Path, tmp_path: Path, mode: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *values_args(RBAC_MODES[mode], tmp_path))
    assert "0 chart(s) failed" in result.stdout


def test_default_render_has_exactly_the_operator_objects(render: Any) -> None:
    manifests = render()
    assert sorted(m["kind"] for m in manifests) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",  # the Lease's: leader election is on with one replica too
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert all(m["metadata"].get("namespace", RELEASE_NS) == RELEASE_NS for m in manifests)


def test_deployment_runs_one_hardened_pod(render: Any) -> None:
    manifests = render()
    deployment = only(manifests, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == only(manifests, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    operator = container(manifests)
    assert operator["image"] == "ghcr.io/mixpeek/mixpeek-operator:0.1.0"  # appVersion
    assert "command" not in operator  # the image's ENTRYPOINT is the CLI
    assert operator["args"] == ["run"]
    security = operator["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert operator["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert operator["resources"]["limits"] == {"memory": "512Mi"}

    ports = {port["name"]: port["containerPort"] for port in operator["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # The startup probe gates the others: allow two minutes to start, checked every second.
    startup = operator["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120

    # The only writable path is an emptyDir at /tmp.
    assert operator["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    (volume,) = pod["volumes"]
    assert volume["name"] == "tmp"
    assert "emptyDir" in volume


def test_metrics_service_targets_the_metrics_port(render: Any) -> None:
    manifests = render()
    service = only(manifests, "Service")
    deployment = only(manifests, "Deployment")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize(
    ("release", "full_name"),
    [("mixpeek-operator", "mixpeek-operator"), ("prod", "prod-mixpeek-operator")],
)
def test_the_docs_name_the_metrics_service_and_lease_as_rendered(
    helm: Path, tmp_path: Path, release: str, full_name: str
) -> None:
    """docs/metrics.md and docs/install.md: `<full name>-metrics`, the Lease after the full name,
    and the alerts' job the same as the Service (the release name alone when it contains the
    chart's name, as the quickstart's does)."""
    values = {"replicaCount": 2, "metrics": {"prometheusRule": {"enabled": True}}}
    out = run_helm(helm, "template", release, str(CHART), "-n", RELEASE_NS, *values_args(values, tmp_path))
    manifests = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    assert only(manifests, "Service")["metadata"]["name"] == f"{full_name}-metrics"
    assert env_of(manifests)["MIXPEEK_OPERATOR_LEADER_ELECTION_ID"] == full_name
    groups = only(manifests, "PrometheusRule")["spec"]["groups"]
    selecting = [rule["expr"] for group in groups for rule in group["rules"] if "job=" in rule["expr"]]
    assert selecting
    assert [expr for expr in selecting if f'job="{full_name}-metrics"' not in expr] == []
    docs = (REPO_ROOT / "docs" / "metrics.md").read_text()
    assert "`<full name>-metrics`" in docs
    assert "`mixpeek-operator-metrics`" in docs


def test_the_chart_readme_names_every_kind_the_chart_can_install(render: Any) -> None:
    everything = {
        "replicaCount": 2,
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
    }
    kinds = {
        manifest["kind"]
        for values in ({}, RBAC_MODES["namespaces"])
        for manifest in render({**everything, **values}, "--api-versions", MAP_API)
    }
    kinds |= {"CustomResourceDefinition"}  # from crds/, which `helm template` leaves out
    readme = (CHART / "README.md").read_text().partition("```")[0]  # the list above the example
    spelled = {
        "CustomResourceDefinition": "the CRD",
        "ConfigMap": "dashboard ConfigMap",
        "ClusterRoleBinding": "ClusterRole and binding",
        "ValidatingAdmissionPolicyBinding": "ValidatingAdmissionPolicy and binding",
        "MutatingAdmissionPolicyBinding": "MutatingAdmissionPolicy and binding",
    }
    assert len(kinds) >= 14
    assert {kind for kind in kinds if spelled.get(kind, kind) not in " ".join(readme.split())} == set()


# --- settings reach the operator's CLI -------------------------------------------------------


def cli_args_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> argparse.Namespace:
    """Parse `mixpeek-operator run` with exactly the environment the chart gives the pod."""
    for name in [name for name in os.environ if name.startswith("MIXPEEK_OPERATOR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    run_cli.configure_parser(parser)
    return parser.parse_args([])


def test_settings_are_wired_into_the_cli_env(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "watchNamespaces": ["team-a", "team-b"],
        "credentials": {"defaultSecretName": "mixpeek-default"},
        "settings": {
            "mixpeekBaseUrl": "http://mixpeek-emulator.ops.svc:8099",
            "observeInterval": 15,
            "workers": 8,
            "rateLimit": 2.5,
            "rateBurst": 5,
            "backoffCap": 120,
            "logLevel": "DEBUG",
            "logFormat": "text",
        },
        "metrics": {"port": 9090},
        "health": {"port": 9091},
    }
    args = cli_args_from_env(monkeypatch, env_of(render(values)))
    assert args.namespaces == ["team-a", "team-b"]
    assert args.default_credentials_secret == (RELEASE_NS, "mixpeek-default")
    assert args.mixpeek_base_url == "http://mixpeek-emulator.ops.svc:8099"
    assert (args.observe_interval, args.workers, args.rate_limit) == (15.0, 8, 2.5)
    assert (args.rate_burst, args.backoff_cap) == (5, 120.0)
    assert (args.log_level, args.log_format) == ("DEBUG", "text")
    assert (args.metrics_port, args.health_port) == (9090, 9091)


def test_default_settings_match_the_cli_defaults(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from_chart = vars(cli_args_from_env(monkeypatch, env_of(render())))
    from_cli = vars(cli_args_from_env(monkeypatch, {}))
    # Except leader election: the chart turns it on for any replica count (an upgrade to more
    # replicas is then safe); a local `mixpeek-operator run` keeps it off unless asked.
    election = {key for key in from_chart if key.startswith("leader_election")}
    assert from_chart["leader_election"] is True
    assert {k: v for k, v in from_chart.items() if k not in election} == {
        k: v for k, v in from_cli.items() if k not in election
    }
    assert from_chart["namespaces"] == []
    assert from_chart["default_credentials_secret"] is None


def test_the_chart_sets_every_setting_the_cli_reads_from_the_env(render: Any) -> None:
    cli_env = {setting.spec.env_var for setting in settings() if setting.spec.env_var}
    assert len(cli_env) >= 10
    full = render({"watchNamespaces": ["a"], "credentials": {"defaultSecretName": "s"}, "replicaCount": 2})
    assert set(env_of(full)) == cli_env


def chart_value(values: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        values = values[part]
    return values


def nested(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value  # type: ignore[no-any-return]


def merged(*trees: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tree in trees:
        for key, value in tree.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and key in out else value
    return out


# The chart's value for each setting (its `chart` key) -> a value other than the default, and
# what the operator then reads; together they cover every setting the model gives a chart key.
CHART_VALUES_AND_SETTINGS = {
    "watchNamespaces": (["team-a", "team-b"], ("team-a", "team-b")),
    "credentials.defaultSecretName": ("mixpeek-default", (RELEASE_NS, "mixpeek-default")),
    "settings.mixpeekBaseUrl": (
        "http://mixpeek-emulator.ops.svc:8099",
        "http://mixpeek-emulator.ops.svc:8099",
    ),
    "settings.observeInterval": (15, 15.0),
    "settings.workers": (8, 8),
    "settings.rateLimit": (2.5, 2.5),
    "settings.rateBurst": (5, 5),
    "settings.backoffCap": (120, 120.0),
    "metrics.port": (9090, 9090),
    "health.port": (9091, 9091),
    "settings.logLevel": ("DEBUG", "DEBUG"),
    "settings.logFormat": ("text", "text"),
    "leaderElection.enabled": (False, False),
    "sharding.enabled": (True, True),
    "sharding.mode": ("rendezvous", "rendezvous"),
    "leaderElection.leaseName": ("ring", "ring"),
    "leaderElection.leaseDuration": (30, 30.0),
    "leaderElection.renewDeadline": (20, 20.0),
    "leaderElection.retryPeriod": (4, 4.0),
}
# Where the chart's default is not the model's, on purpose (docs/operating.md says why).
CHART_DEFAULTS_OF_ITS_OWN = {
    "leaderElection.enabled": None,  # on unless sharding is, for any replica count
    "leaderElection.leaseName": "",  # the release's full name
    "credentials.defaultSecretName": "",  # none; a name in the release namespace when set
}


def test_the_chart_values_are_the_settings_model_s(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each setting's chart key (the model's `chart`) exists in values.yaml with the model's
    default, and a value given there reaches the operator as that setting."""
    keyed = {setting.spec.chart: setting for setting in settings() if setting.spec.chart}
    assert set(keyed) == set(CHART_VALUES_AND_SETTINGS)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, setting in keyed.items():
        default = chart_value(values, key)
        if key in CHART_DEFAULTS_OF_ITS_OWN:
            assert default == CHART_DEFAULTS_OF_ITS_OWN[key], key
        else:
            assert (tuple(default) if isinstance(default, list) else default) == setting.default, key
    given = merged(*(nested(key, value) for key, (value, _) in CHART_VALUES_AND_SETTINGS.items()))
    read = Settings.from_args(cli_args_from_env(monkeypatch, env_of(render(given))))
    for key, (_, expected) in CHART_VALUES_AND_SETTINGS.items():
        assert getattr(read, keyed[key].name) == expected, key
    # A bare `mixpeek-operator run` reads the model's defaults.
    assert Settings.from_args(cli_args_from_env(monkeypatch, {})) == DEFAULTS


def test_the_pod_name_reaches_the_operator_as_its_identity(render: Any) -> None:
    """kopf's identity and the Lease holder's: the pod name from the downward API
    (see coordination.operator_identity)."""
    (pod_name,) = [item for item in container(render())["env"] if item["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


# --- several replicas: leader election ------------------------------------------------------


def test_one_replica_elects_too_but_has_no_budget_and_no_spread(render: Any) -> None:
    """Regression: one replica ran without leader election, so `helm upgrade` to two replicas
    briefly had that pod writing beside two electing ones."""
    manifests = render()
    assert env_of(manifests)["MIXPEEK_OPERATOR_LEADER_ELECTION"] == "true"
    assert env_of(manifests) == {
        **env_of(render({"replicaCount": 2})),
        "MIXPEEK_OPERATOR_LEADER_ELECTION": "true",
    }
    (role,) = [m for m in manifests if m["kind"] == "Role"]  # the Lease permission
    assert role["metadata"]["namespace"] == RELEASE_NS
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]
    assert "affinity" not in only(manifests, "Deployment")["spec"]["template"]["spec"]
    # Still possible to turn off, with one replica only.
    assert (
        env_of(render({"leaderElection": {"enabled": False}}))["MIXPEEK_OPERATOR_LEADER_ELECTION"] == "false"
    )


def test_two_replicas_elect_a_leader_roll_and_keep_a_pod_through_drains(
    render: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render({"replicaCount": 2})
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    selector = deployment["spec"]["selector"]["matchLabels"]
    budget = only(manifests, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"] == {
        "labelSelector": {"matchLabels": selector},
        "topologyKey": "kubernetes.io/hostname",
    }
    # The Lease identity is the pod name (POD_NAME from the downward API, checked above).
    monkeypatch.setenv("POD_NAME", "rel-mixpeek-operator-5d8f7-x2x9q")
    config = run_cli.leader_election_config(
        Settings.from_args(cli_args_from_env(monkeypatch, env_of(manifests)))
    )
    assert config is not None
    assert (config.namespace, config.lease_name) == (RELEASE_NS, "rel-mixpeek-operator")
    assert config.identity == "rel-mixpeek-operator-5d8f7-x2x9q"
    timings = config.timings
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (15, 10, 2)


@pytest.mark.parametrize("mode", RBAC_MODES)
def test_the_lease_permission_is_get_create_update_in_the_release_namespace_only(
    render: Any, mode: str
) -> None:
    manifests = render({**RBAC_MODES[mode], "replicaCount": 2})
    lease_rules = [
        (manifest, rule) for manifest, rule in rules_of(manifests) if "leases" in rule["resources"]
    ]
    ((role, rule),) = lease_rules
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == RELEASE_NS
    assert rule == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    }
    (binding,) = [
        m
        for m in manifests
        if m["kind"] == "RoleBinding" and m["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["metadata"]["namespace"] == RELEASE_NS


def test_sharding_replaces_leader_election_and_may_list_the_ring(
    render: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render({"replicaCount": 3, "sharding": {"enabled": True}})
    env = env_of(manifests)
    assert (env["MIXPEEK_OPERATOR_SHARDING"], env["MIXPEEK_OPERATOR_LEADER_ELECTION"]) == ("true", "false")
    ((role, rule),) = [(m, r) for m, r in rules_of(manifests) if "leases" in r["resources"]]
    assert role["metadata"]["namespace"] == RELEASE_NS
    assert rule["verbs"] == ["get", "create", "update", "list"]
    config = run_cli.leader_election_config(Settings.from_args(cli_args_from_env(monkeypatch, env)))
    assert config is not None
    assert (config.mode, config.namespace, config.lease_name) == (
        "labels",  # sharding.mode's default: label shards
        RELEASE_NS,
        "rel-mixpeek-operator",
    )


@pytest.mark.parametrize("mode", RBAC_MODES)
@pytest.mark.parametrize("sharding_mode", [None, "labels", "rendezvous"])
def test_label_shards_reach_the_pod_and_the_rbac_covers_them(
    render: Any, monkeypatch: pytest.MonkeyPatch, mode: str, sharding_mode: str | None
) -> None:
    """Label shards (the default mode) need no verb beyond the others: their own watches are
    list/watch with selectors, their labels a patch, their assigner one more Lease."""
    sharding: dict[str, Any] = {"enabled": True, **({"mode": sharding_mode} if sharding_mode else {})}
    manifests = render({**RBAC_MODES[mode], "replicaCount": 3, "sharding": sharding})
    env = env_of(manifests)
    expected = sharding_mode or "labels"
    assert env["MIXPEEK_OPERATOR_SHARDING_MODE"] == expected
    assert (env["MIXPEEK_OPERATOR_SHARDING"], env["MIXPEEK_OPERATOR_LEADER_ELECTION"]) == ("true", "false")
    parsed = Settings.from_args(cli_args_from_env(monkeypatch, env))
    assert (parsed.sharding, parsed.sharding_mode) == (True, expected)

    # In every scope the operator watches (the cluster, or each watched namespace's Role).
    scopes = [m for m in manifests if m["kind"] == "ClusterRole"] + watch_rbac(manifests, "Role")
    assert scopes
    for scope in scopes:
        granted: dict[str, set[str]] = {}
        for rule in scope["rules"]:
            for resource in rule["resources"]:
                granted.setdefault(resource, set()).update(rule["verbs"])
        assert {"get", "list", "watch", "patch"} <= granted["bucketsyncs"], scope["metadata"]
        assert {"get", "list", "watch"} <= granted["secrets"], scope["metadata"]
    ((role, rule),) = [(m, r) for m, r in rules_of(manifests) if "leases" in r["resources"]]
    assert role["metadata"]["namespace"] == RELEASE_NS  # member Leases and <ring>-assigner
    assert set(rule["verbs"]) == {"get", "create", "update", "list"}


def test_hard_anti_affinity_and_explicit_affinity(render: Any) -> None:
    hard = only(render({"replicaCount": 3, "podAntiAffinityPreset": "hard"}), "Deployment")
    anti = hard["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(anti) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    mine = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    explicit = only(render({"replicaCount": 3, "affinity": mine}), "Deployment")
    assert explicit["spec"]["template"]["spec"]["affinity"] == mine


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "replicaCount > 1 needs leaderElection"),
        ({"sharding": {"enabled": "yes"}}, "at '/sharding/enabled'"),
        (
            {"replicaCount": 2, "leaderElection": {"leaseDuration": 10, "renewDeadline": 10}},
            "renewDeadline must be shorter",
        ),
    ],
)
def test_unsafe_replica_settings_are_refused(
    helm: Path, tmp_path: Path, values: dict[str, Any], error: str
) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *values_args(values, tmp_path), check=False)
    assert result.returncode != 0
    assert error in result.stderr


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", RBAC_MODES)
def test_rbac_is_exactly_what_the_operator_needs(render: Any, mode: str) -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for _, rule in rules_of(render(RBAC_MODES[mode])):
        assert "resourceNames" not in rule
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_RULES


@pytest.mark.parametrize("mode", RBAC_MODES)
def test_rbac_has_no_wildcards_and_no_secret_writes(render: Any, mode: str) -> None:
    for manifest, rule in rules_of(render(RBAC_MODES[mode])):
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], manifest["metadata"]
        if "secrets" in rule["resources"]:
            # patch only for the in-use finalizer; never create, update or delete a Secret.
            assert set(rule["verbs"]) <= {"get", "list", "watch", "patch"}


def test_cluster_mode_binds_a_cluster_role_and_no_roles(render: Any) -> None:
    manifests = render()
    assert not watch_rbac(manifests, "Role") + watch_rbac(manifests, "RoleBinding")
    role, binding = only(manifests, "ClusterRole"), only(manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = only(manifests, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": RELEASE_NS}
    ]
    assert "MIXPEEK_OPERATOR_NAMESPACES" not in env_of(manifests)


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        ({"watchNamespaces": ["team-a", "team-b"]}, ["team-a", "team-b"]),
        # The operator also watches the default Secret's namespace (the release namespace).
        (
            {"watchNamespaces": ["team-a"], "credentials": {"defaultSecretName": "mixpeek-default"}},
            ["team-a", RELEASE_NS],
        ),
        (
            {"watchNamespaces": [RELEASE_NS, "team-a"], "credentials": {"defaultSecretName": "d"}},
            [RELEASE_NS, "team-a"],
        ),
    ],
)
def test_namespace_mode_has_roles_only_in_watched_namespaces(
    render: Any, values: dict[str, Any], namespaces: list[str]
) -> None:
    manifests = render(values)
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles, bindings = watch_rbac(manifests, "Role"), watch_rbac(manifests, "RoleBinding")
    assert [r["metadata"]["namespace"] for r in roles] == namespaces
    assert [b["metadata"]["namespace"] for b in bindings] == namespaces
    account = only(manifests, "ServiceAccount")["metadata"]["name"]
    for role, binding in zip(roles, bindings, strict=True):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": RELEASE_NS}]
    assert env_of(manifests)["MIXPEEK_OPERATOR_NAMESPACES"] == ",".join(values["watchNamespaces"])


def test_rbac_and_service_account_can_be_brought_by_the_user(render: Any) -> None:
    manifests = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert sorted(m["kind"] for m in manifests) == ["Deployment", "Service"]
    assert only(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --- optional objects and pass-through values ------------------------------------------------


def test_service_monitor_only_when_enabled(render: Any) -> None:
    assert not [m for m in render() if m["kind"] == "ServiceMonitor"]
    enabled = {"enabled": True, "interval": "15s", "labels": {"release": "kps"}}
    monitor = only(render({"metrics": {"serviceMonitor": enabled}}), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}


MAP_API = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


def test_admission_policy_only_where_the_cluster_serves_it(render: Any) -> None:
    kinds = {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}
    assert not [m for m in render() if m["kind"] in kinds]  # no such API (helm's default capabilities)
    assert not [
        m
        for m in render({"admissionPolicy": {"enabled": False}}, "--api-versions", MAP_API)
        if m["kind"] in kinds
    ]
    manifests = render({}, "--api-versions", MAP_API)
    policy, binding = (
        only(manifests, "MutatingAdmissionPolicy"),
        only(manifests, "MutatingAdmissionPolicyBinding"),
    )
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE"], "resources": [PLURAL]}
    ]
    assert policy["spec"]["failurePolicy"] == "Ignore"
    expressions = [policy["spec"]["mutations"][0]["jsonPatch"]["expression"]] + [
        c["expression"] for c in policy["spec"]["matchConditions"]
    ]
    assert all(f'"{FINALIZER}"' in expression for expression in expressions)  # the operator's name
    assert "matchResources" not in binding["spec"]  # cluster-wide: every namespace


@pytest.mark.parametrize("mode", ["namespaces", "namespaces+default-secret"])
def test_admission_policy_binding_matches_only_watched_namespaces(render: Any, mode: str) -> None:
    manifests = render(RBAC_MODES[mode], "--api-versions", MAP_API)
    binding = only(manifests, "MutatingAdmissionPolicyBinding")
    (expression,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    roles = sorted(m["metadata"]["namespace"] for m in watch_rbac(manifests, "Role"))
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "In"
    assert sorted(expression["values"]) == roles  # exactly where the operator can remove it


def test_pod_placement_and_image_values_pass_through(render: Any) -> None:
    values = {
        "image": {"repository": "registry.example/mixpeek-operator", "tag": "dev", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "data"},
        "podLabels": {"tier": "control"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
    }
    manifests = render(values)
    template = only(manifests, "Deployment")["spec"]["template"]
    pod = template["spec"]
    assert template["metadata"]["annotations"] == values["podAnnotations"]
    assert template["metadata"]["labels"]["tier"] == "control"
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[key] == values[key]
    operator = container(manifests)
    assert operator["image"] == "registry.example/mixpeek-operator:dev"
    assert operator["imagePullPolicy"] == "Always"
    assert operator["resources"] == values["resources"]


def test_notes_tell_the_next_steps(helm: Path, tmp_path: Path) -> None:
    for values, secret_command in (
        ({}, "create secret generic mixpeek-credentials"),
        ({"credentials": {"defaultSecretName": "mixpeek-default"}}, f"-n {RELEASE_NS} create secret"),
    ):
        args = ["install", RELEASE, str(CHART), "-n", RELEASE_NS, "--dry-run=client"]
        notes = run_helm(helm, *args, *values_args(values, tmp_path)).stdout.partition("NOTES:")[2]
        assert secret_command in notes
        assert "apply -f - <<'YAML'" in notes
        assert "wait --for=condition=Ready bucketsync/demo" in notes
        assert "kubectl apply --server-side" in notes  # how to upgrade the CRD


# --- security contexts, NetworkPolicy, helm test -------------------------------------------

OPENSHIFT_UID = {
    "podSecurityContext": {"runAsUser": None, "runAsGroup": None},
    "securityContext": {"runAsUser": None},
}
WITH_DEFAULT_SECRET = {"credentials": {"defaultSecretName": "mixpeek-default"}}


def pods_of(manifests: list[Manifest]) -> list[Manifest]:
    """Every pod spec the chart renders: the operator's and the helm test's."""
    specs = [only(manifests, "Deployment")["spec"]["template"]["spec"]]
    return specs + [m["spec"] for m in manifests if m["kind"] == "Pod"]


def test_security_contexts_come_from_values(render: Any) -> None:
    values = {
        "podSecurityContext": {"runAsUser": 1000700000, "fsGroup": 1000700000},
        "securityContext": {"readOnlyRootFilesystem": False},
    }
    manifests = render(values)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000700000,
        "runAsGroup": 65532,
        "fsGroup": 1000700000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(manifests)["securityContext"]["readOnlyRootFilesystem"] is False
    assert container(manifests)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_null_uid_lets_openshift_assign_one(render: Any, helm: Path, tmp_path: Path) -> None:
    """restricted-v2 assigns a UID from the namespace's range and refuses a pinned one."""
    values = OPENSHIFT_UID | WITH_DEFAULT_SECRET
    manifests = render(values)
    for pod in pods_of(manifests):
        assert "runAsUser" not in pod["securityContext"]
        assert "runAsGroup" not in pod["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for each in pod["containers"]:
            assert "runAsUser" not in each["securityContext"]
            assert each["securityContext"]["runAsNonRoot"] is True
    assert len(pods_of(manifests)) == 2
    # The same on the command line, and it lints clean against the schema.
    sets = ["--set", "podSecurityContext.runAsUser=null", "--set", "securityContext.runAsUser=null"]
    args = ["template", RELEASE, str(CHART), "-n", RELEASE_NS, *sets]
    rendered = yaml.safe_load_all(run_helm(helm, *args).stdout)
    (deployment,) = [m for m in rendered if m and m["kind"] == "Deployment"]
    assert "runAsUser" not in deployment["spec"]["template"]["spec"]["securityContext"]
    lint = run_helm(helm, "lint", "--strict", str(CHART), *values_args(values, tmp_path))
    assert "0 chart(s) failed" in lint.stdout


def test_network_policy_is_off_by_default_and_allows_only_what_the_operator_needs(render: Any) -> None:
    assert not [m for m in render() if m["kind"] == "NetworkPolicy"]
    manifests = render({"networkPolicy": {"enabled": True}})
    policy = only(manifests, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == only(manifests, "Service")["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}]},
        {"ports": [{"port": "health", "protocol": "TCP"}]},
    ]
    dns, api_server, mixpeek = spec["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert api_server == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    assert mixpeek == {"ports": [{"port": 443, "protocol": "TCP"}]}


def test_network_policy_narrows_to_addresses_and_scrapers(render: Any) -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    emulator = {
        "to": [{"podSelector": {"matchLabels": {"app": "mixpeek-emulator"}}}],
        "ports": [{"port": 8099}],
    }
    values = {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [scraper],
            "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
            "mixpeek": {"cidrs": ["203.0.113.0/24", "2001:db8::/64"]},
            "extraEgress": [emulator],
        }
    }
    spec = only(render(values), "NetworkPolicy")["spec"]
    assert spec["ingress"][0] == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [scraper]}
    _, api_server, mixpeek, extra = spec["egress"]
    assert api_server == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
    assert mixpeek["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/64"}}]
    assert extra == emulator


def test_helm_test_pod_checks_the_default_secret_without_api_access(render: Any) -> None:
    assert not [m for m in render() if m["kind"] == "Pod"]  # nothing to check without a default Secret
    assert not [
        m for m in render(WITH_DEFAULT_SECRET | {"helmTest": {"enabled": False}}) if m["kind"] == "Pod"
    ]
    manifests = render(WITH_DEFAULT_SECRET | {"helmTest": {"bucketId": "bkt_demo"}})
    pod = only(manifests, "Pod")
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert (
        spec["securityContext"]
        == only(manifests, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    )
    (check,) = spec["containers"]
    assert check["image"] == container(manifests)["image"]
    assert check["args"] == ["check", "--bucket", "bkt_demo"]
    assert check["securityContext"] == container(manifests)["securityContext"]
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in check["env"] if "valueFrom" in e}
    assert from_secret == {
        "MIXPEEK_API_KEY": {"name": "mixpeek-default", "key": "apiKey", "optional": True},
        "MIXPEEK_NAMESPACE": {"name": "mixpeek-default", "key": "namespace", "optional": True},
        "MIXPEEK_BASE_URL": {"name": "mixpeek-default", "key": "baseUrl", "optional": True},
    }
    # The env names are the ones `mixpeek-operator check` reads.
    assert set(from_secret) == {check_cli.ENV_API_KEY, check_cli.ENV_NAMESPACE, check_cli.ENV_BASE_URL}
    literal = {e["name"]: e["value"] for e in check["env"] if "value" in e}
    assert literal == {
        check_cli.ENV_SECRET: f"{RELEASE_NS}/mixpeek-default",
        check_cli.ENV_OPERATOR_BASE_URL: "https://api.mixpeek.com",
    }
    # Neither the metrics Service nor a NetworkPolicy selects it.
    selector = only(manifests, "Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


# --- the values schema -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"settings": {"workers": -1}}, "at '/settings/workers': minimum: got -1, want 1"),
        ({"settings": {"workers": "8"}}, "at '/settings/workers': got string, want integer"),
        ({"settings": {"rateBurst": 1.5}}, "at '/settings/rateBurst': got number, want integer"),
        ({"settings": {"rateLimit": 0}}, "at '/settings/rateLimit'"),
        ({"settings": {"observeInterval": -5}}, "at '/settings/observeInterval'"),
        ({"settings": {"backoffCap": "long"}}, "at '/settings/backoffCap': got string, want number"),
        ({"settings": {"logLevel": "loud"}}, "at '/settings/logLevel': value must be one of"),
        ({"settings": {"logFormat": "xml"}}, "at '/settings/logFormat': value must be one of"),
        ({"settings": {"mixpeekBaseUrl": "api.mixpeek.com"}}, "at '/settings/mixpeekBaseUrl'"),
        ({"settings": {"observe_interval": 5}}, "additional properties 'observe_interval' not allowed"),
        ({"watchInNamespaces": ["a"]}, "additional properties 'watchInNamespaces' not allowed"),
        ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
        ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
        ({"credentials": {"apiKey": "sk_live"}}, "additional properties 'apiKey' not allowed"),
        ({"credentials": {"defaultSecretName": "My Secret"}}, "at '/credentials/defaultSecretName'"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of"),
        ({"metrics": {"port": 70000}}, "at '/metrics/port': maximum"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "at '/metrics/serviceMonitor/enabled'"),
        ({"rbac": {"create": "false"}}, "at '/rbac/create': got string, want boolean"),
        ({"admissionPolicy": {"enabled": "yes"}}, "at '/admissionPolicy/enabled': got string, want boolean"),
        ({"admissionPolicy": {"failurePolicy": "Never"}}, "at '/admissionPolicy/failurePolicy'"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"replicaCount": 0}, "at '/replicaCount': minimum"),
        ({"leaderElection": {"enabled": "auto"}}, "at '/leaderElection/enabled'"),
        ({"podAntiAffinityPreset": "always"}, "at '/podAntiAffinityPreset': value must be one of"),
        ({"podSecurityContext": {"runAsUser": -1}}, "at '/podSecurityContext/runAsUser': minimum"),
        (
            {"securityContext": {"readOnlyRootFilesystem": "yes"}},
            "at '/securityContext/readOnlyRootFilesystem'",
        ),
        ({"networkPolicy": {"enable": True}}, "additional properties 'enable' not allowed"),
        (
            {"networkPolicy": {"mixpeek": {"cidrs": ["api.mixpeek.com"]}}},
            "at '/networkPolicy/mixpeek/cidrs/0'",
        ),
        ({"networkPolicy": {"apiServer": {"ports": []}}}, "at '/networkPolicy/apiServer/ports': minItems"),
        ({"helmTest": {"bucket": "b"}}, "additional properties 'bucket' not allowed"),
        (
            {"metrics": {"prometheusRule": {"runbookBaseUrl": "docs"}}},
            "at '/metrics/prometheusRule/runbookBaseUrl'",
        ),
    ],
)
def test_schema_refuses_invalid_values_naming_the_field(
    helm: Path, tmp_path: Path, values: dict[str, Any], error: str
) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *values_args(values, tmp_path), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert error in result.stderr


def test_schema_refuses_wrong_types_given_on_the_command_line(helm: Path) -> None:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--set-string", "settings.workers=8", check=False
    )
    assert "at '/settings/workers': got string, want integer" in result.stderr


def test_kube_version_below_the_minimum_is_refused(helm: Path) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.29.0", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


# --- the CRD ---------------------------------------------------------------------------------


def test_chart_crd_is_byte_identical_to_the_generated_crd() -> None:
    chart_copy = (CHART / "crds" / crd.CRD_FILENAME).read_bytes()
    assert chart_copy == (REPO_ROOT / crd.CRD_PATH).read_bytes()
    assert chart_copy == crd.render_crd_yaml().encode()
    # `mixpeek-operator crd --write` maintains the chart copy because the folder exists.
    assert CHART / "crds" / crd.CRD_FILENAME in crd.crd_targets(REPO_ROOT)
    assert [path.name for path in (CHART / "crds").iterdir()] == [crd.CRD_FILENAME]


def test_crd_is_installed_from_crds_and_not_templated(render: Any) -> None:
    assert not [m for m in render() if m["kind"] == "CustomResourceDefinition"]
    (installed,) = [m for m in render({}, "--include-crds") if m["kind"] == "CustomResourceDefinition"]
    assert installed == crd.build_crd()


CLUSTER_SCOPED_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def test_cluster_scoped_names_differ_between_namespaces_of_one_release_name(helm: Path) -> None:
    """Regression: the ClusterRole, its binding and the finalizer policy and binding had the same
    names for a release name installed in two namespaces (the second install fails)."""

    def cluster_scoped(namespace: str) -> dict[tuple[str, str], Manifest]:
        args = ["template", RELEASE, str(CHART), "-n", namespace, "--api-versions", MAP_API]
        out = run_helm(helm, *args).stdout
        docs = [doc for doc in yaml.safe_load_all(out) if doc]
        return {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in CLUSTER_SCOPED_KINDS}

    team_a, team_b = cluster_scoped("team-a"), cluster_scoped("team-b")
    assert {kind for kind, _ in team_a} == CLUSTER_SCOPED_KINDS
    assert not {name for _, name in team_a} & {name for _, name in team_b}
    for docs in (team_a, team_b):
        names = {name for _, name in docs}
        for doc in docs.values():  # each binding names its own release's object
            referenced = doc.get("roleRef", {}).get("name") or doc.get("spec", {}).get("policyName")
            assert referenced is None or referenced in names


def test_no_pod_gets_service_link_variables(render: Any) -> None:
    """Regression (found by the README quickstart on the node): with the release named
    `mixpeek-operator`, its metrics Service `mixpeek-operator-metrics` made Kubernetes inject
    MIXPEEK_OPERATOR_METRICS_PORT=tcp://… into every later pod of the namespace, which the CLI
    reads as its --metrics-port: the emulator pod (and an operator pod restarted after the
    Service existed) crash-looped."""
    manifests = render(WITH_DEFAULT_SECRET | {"helmTest": {"bucketId": "bkt_demo"}})
    pods = [only(manifests, "Deployment")["spec"]["template"]["spec"], only(manifests, "Pod")["spec"]]
    assert [pod.get("enableServiceLinks") for pod in pods] == [False, False]
    emulator = next(
        doc
        for doc in yaml.safe_load_all((REPO_ROOT / "docs/quickstart/emulator.yaml").read_text())
        if doc["kind"] == "Deployment"
    )
    assert emulator["spec"]["template"]["spec"]["enableServiceLinks"] is False
