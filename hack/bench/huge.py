"""`--size huge`: 1,000 and 10,000 objects in one run, memory at 0 / 1k / 10k, idle over 50
buckets, and a restart over 10,000 converged objects.

Stages, each against the same control plane and emulator:

1. floor at N=1000, then the operator's bulk create of 1000 objects (fresh operator);
   its RSS before the objects and once they are Ready and settled.
2. the operator's bulk create of 10,000 objects (fresh operator, fresh emulator state);
   RSS before and after; then the idle fleet; then the operator is stopped.
3. restart: a new operator over the 10,000 converged objects, until every object has been
   reconciled once and nothing is queued.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hack.bench import objcost, policy, stats
from hack.bench.kube import Watcher
from hack.bench.scenarios import Bench, Settings
from hack.localcluster import ControlPlane

HUGE_RATIO_TARGET = 12.0  # N=10,000 all Ready within 12x the N=1,000 time
HUGE_RSS_TARGET_MB = 350.0
SLOPE_TARGET_KB = 20.0
RESTART_SECONDS_TARGET = 60.0


def namespaces(settings: Settings) -> dict[str, str]:
    small, large = settings.n, settings.huge_n
    return {
        "floor": f"bench-floor-{small}",
        "small": f"bench-fleet-{small}",
        "large": f"bench-fleet-{large}",
    }


async def run_huge(
    settings: Settings, plane: ControlPlane, workdir: Path, pids: list[int], say: Any
) -> dict[str, Any]:
    bench = Bench.start(settings, plane, workdir, pids)
    kube, admin, emulator = bench.kube, bench.admin, bench.emulator
    ns = namespaces(settings)
    small, large = settings.n, settings.huge_n
    results: dict[str, Any] = {}
    try:
        await bench.prepare_namespaces(ns.values())
        if settings.admission_policy:
            await asyncio.to_thread(policy.install, plane, [ns["small"], ns["large"]], workdir)
            waited = await policy.wait_in_effect(kube, ns["large"])
            say(f"admission policy in effect after {waited:.1f}s")

        say(f"floor: {small} pre-created objects, {settings.workers} at a time")
        results["floor"] = await bench.floor(ns["floor"], small)
        say(f"floor: {results['floor']['wall_seconds']:.2f}s")

        stages: dict[str, dict[str, Any]] = {}
        for stage, n in (("small", small), ("large", large)):
            await admin.reset()
            operator = bench.start_operator(f"fleet-{n}", ns[stage])
            await asyncio.sleep(settings.settle_seconds)
            rss_before = operator.rss_bytes()
            watcher = Watcher(kube, ns[stage])
            await watcher.start()
            try:
                say(f"bulk create: {n} objects over {settings.buckets} buckets")
                bulk = await bench.bulk_create(operator, watcher, n)
                say(f"bulk create {n}: {bulk['wall_seconds']:.2f}s")
                rss_after = await bench.settle_rss(operator)
                stages[stage] = {"bulk_create": bulk, "rss_bytes_before": rss_before, "rss_bytes": rss_after}
                if stage == "large":
                    say(f"idle: {settings.idle_intervals} intervals of {settings.observe_interval}s")
                    results["idle"] = await bench.idle(operator, n)
                    say("object cost: tracemalloc over the served bodies and remote syncs")
                    results["object_cost"] = await objcost.measure(
                        kube, ns[stage], emulator.url, bench.buckets
                    )
            finally:
                await watcher.stop()
                bench.stop_operator(operator)
        results["bulk_create"] = stages["small"]["bulk_create"]
        results["bulk_create_huge"] = stages["large"]["bulk_create"]
        points = [
            (0, stages["large"]["rss_bytes_before"]),
            (small, stages["small"]["rss_bytes"]),
            (large, stages["large"]["rss_bytes"]),
        ]
        results["memory"] = {
            "points": [{"objects": n, "rss_bytes": rss, "rss_mb": rss / 2**20} for n, rss in points],
            "rss_mb_before_objects_small_stage": stages["small"]["rss_bytes_before"] / 2**20,
            "slope_kb_per_object": stats.linear_slope([(n, rss / 1024) for n, rss in points]),
            "slope_kb_per_object_1k_to_10k": (points[2][1] - points[1][1]) / 1024 / (large - small),
            "rss_mb_at_max": points[-1][1] / 2**20,
            "objects_at_max": large,
        }

        say(f"restart: a new operator over {large} converged objects")
        restart, operator = await bench.restart("restart", ns["large"], large)
        bench.stop_operator(operator)
        results["restart"] = restart
        say(f"restart: caught up in {restart['seconds_to_caught_up']:.1f}s")
    finally:
        await bench.aclose(pids)
    return results


def huge_rows(settings: Settings, results: dict[str, Any], judge: Any, rows: list[stats.Row]) -> None:
    """The 10k rows (the 1k bulk rows come from the standard table)."""
    small, large = results["bulk_create"], results["bulk_create_huge"]
    n = large["objects"]
    ratio = stats.ratio(large["wall_seconds"], small["wall_seconds"])
    result = judge(
        "huge_wall_over_1k_wall",
        ratio,
        f"<= {HUGE_RATIO_TARGET:g}",
        ratio is not None and ratio <= HUGE_RATIO_TARGET,
    )
    rows.append(
        stats.Row(
            f"Bulk create N={n:,}",
            f"wall time, {n} objects → all Ready (vs {small['objects']} objects, same run)",
            stats.format_seconds(large["wall_seconds"]),
            stats.format_seconds(small["wall_seconds"]),
            stats.format_ratio(ratio),
            f"≤ {HUGE_RATIO_TARGET:g}x the 1k time",
            result,
        )
    )
    rows.append(
        stats.Row(
            f"Bulk create N={n:,}",
            "throughput (objects/s)",
            stats.format_number(large["objects_per_second"], 1),
            stats.format_number(small["objects_per_second"], 1),
        )
    )
    ttr = large["time_to_ready_seconds"]
    rows.append(
        stats.Row(
            f"Bulk create N={n:,}",
            "time to Ready p50 / p99 (watch)",
            f"{stats.format_seconds(ttr['p50'])} / {stats.format_seconds(ttr['p99'])}",
        )
    )
    writes = large["kube_writes_per_object_total"]
    by_kind = ", ".join(f"{k} {v:.2f}" for k, v in large["kube_writes_per_object"].items() if v)
    rows.append(
        stats.Row(
            f"Bulk create N={n:,}",
            "Kubernetes writes / object",
            f"{writes:.2f} ({by_kind})",
            "",
            "",
            "≤ 2 (status + Event)",
            judge("huge_kube_writes_per_object", writes, "<= 2", writes <= 2),
        )
    )
    rows.append(
        stats.Row(
            f"Bulk create N={n:,}",
            "remote calls / object by endpoint; Kubernetes GETs / object",
            ", ".join(f"{k} {v:.3f}" for k, v in large["remote_calls_per_object"].items())
            + "; "
            + (", ".join(f"{k} {v:.3f}" for k, v in large["kube_gets_per_object"].items()) or "0"),
        )
    )
    rows.append(
        stats.Row(
            f"Bulk create N={n:,}",
            "CPU seconds by process (until all Ready)",
            ", ".join(f"{k} {v:.1f}" for k, v in large["cpu_seconds_until_ready"].items()),
        )
    )
    # CPU per object does not depend on what else the machine runs: it shows growth that wall
    # times on a shared machine can hide or fake.
    for process in ("operator", "kube-apiserver"):
        per_small = small["cpu_seconds_until_ready"].get(process, 0.0) / small["objects"] * 1000
        per_large = large["cpu_seconds_until_ready"].get(process, 0.0) / n * 1000
        rows.append(
            stats.Row(
                f"Bulk create N={n:,}",
                f"{process} CPU per object, 10k vs 1k (superlinear work shows here)",
                f"{per_large:.1f} ms",
                f"{per_small:.1f} ms",
                stats.format_ratio(stats.ratio(per_large, per_small)),
            )
        )
    for label, run in (("1k", small), ("10k", large)):
        busy = run["cpu_seconds_until_ready"].get("other", 0.0) / run["wall_seconds"]
        rows.append(
            stats.Row(
                f"Bulk create N={n:,}",
                f"CPUs used by other processes during the {label} window (machine load)",
                f"{busy:.2f} of 2",
            )
        )
    _memory_rows(results["memory"], judge, rows)
    cost = results.get("object_cost")
    if cost:
        rows.append(
            stats.Row(
                "Memory",
                f"per object, tracemalloc over {cost['objects']} served bodies and {cost['remote_syncs']} "
                f"remote syncs ({cost['served_json_bytes_per_object']:.0f} B of JSON each as served)",
                "; ".join(f"{what}: {size / 1024:.1f} KB" for what, size in cost["bytes_per_object"].items()),
            )
        )
    _restart_rows(results["restart"], judge, rows)


def _memory_rows(memory: dict[str, Any], judge: Any, rows: list[stats.Row]) -> None:
    points = " / ".join(f"{p['objects']}: {p['rss_mb']:.0f} MB" for p in memory["points"])
    rows.append(stats.Row("Memory", "operator RSS by objects (Ready, settled)", points))
    slope = memory["slope_kb_per_object"]
    rows.append(
        stats.Row(
            "Memory",
            "slope (least squares over the three points; 1k → 10k alone: "
            f"{memory['slope_kb_per_object_1k_to_10k']:.1f} KB)",
            f"{stats.format_number(slope, 1)} KB/object",
            "",
            "",
            f"≤ {SLOPE_TARGET_KB:g} KB/object",
            judge("memory_slope_kb_per_object", slope, f"<= {SLOPE_TARGET_KB:g}", slope <= SLOPE_TARGET_KB),
        )
    )
    rss = memory["rss_mb_at_max"]
    rows.append(
        stats.Row(
            "Memory",
            f"RSS at N={memory['objects_at_max']}",
            f"{rss:.0f} MB",
            "",
            "",
            f"≤ {HUGE_RSS_TARGET_MB:g} MB",
            judge("memory_rss_mb_at_10000", rss, f"<= {HUGE_RSS_TARGET_MB:g}", rss <= HUGE_RSS_TARGET_MB),
        )
    )


def _restart_rows(restart: dict[str, Any], judge: Any, rows: list[stats.Row]) -> None:
    bound = restart["groups"] * restart["pages_per_group"]
    calls = {k: v for k, v in restart["remote_calls"].items() if v}
    lists = calls.get("list", 0)
    others = {k: v for k, v in calls.items() if k != "list"}
    exact = lists == bound and not others
    rows.append(
        stats.Row(
            "Restart",
            f"remote calls until caught up ({restart['objects']} converged objects, "
            f"{restart['groups']} buckets x {restart['pages_per_group']} page)",
            ", ".join(f"{k} {v}" for k, v in calls.items()) or "0",
            "",
            "",
            f"= groups x pages = {bound}, list only",
            judge("restart_remote_calls", lists, f"== {bound}", exact),
        )
    )
    writes = restart["kube_writes_total"]
    rows.append(
        stats.Row(
            "Restart",
            "Kubernetes writes; GETs",
            f"{stats.format_number(writes)}; "
            + (", ".join(f"{k} {v:g}" for k, v in restart["kube_gets"].items()) or "0"),
            "",
            "",
            "0 writes",
            judge("restart_kube_writes", writes, "== 0", writes == 0),
        )
    )
    seconds = restart["seconds_to_caught_up"]
    rows.append(
        stats.Row(
            "Restart",
            "start → caught up (every object reconciled once, queue empty); start → healthy",
            f"{stats.format_seconds(seconds)}; {stats.format_seconds(restart['seconds_to_healthy'])}",
            "",
            "",
            f"≤ {RESTART_SECONDS_TARGET:g} s",
            judge("restart_seconds_to_caught_up", seconds, f"<= {RESTART_SECONDS_TARGET:g}", seconds <= 60),
        )
    )
    rows.append(
        stats.Row(
            "Restart",
            "reconciles by result; operator CPU; RSS when caught up",
            ", ".join(f"{k} {v:g}" for k, v in restart["reconcile_results"].items() if v)
            + f"; {restart['operator_cpu_seconds']:.1f} CPU-s; {restart['rss_mb_caught_up']:.0f} MB",
        )
    )
