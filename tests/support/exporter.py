"""Read the operator's Prometheus exporter the way Prometheus does: over HTTP, parsed by the
Prometheus text parser (tests/packaging/test_docs.py, tests/tools/test_monitoring.py)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mixpeek_operator.metrics import OperatorMetrics


def scrape_families(metrics: OperatorMetrics) -> Iterable[Metric]:
    """Every metric family the exporter serves on /metrics."""
    server = metrics.serve(0, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    return list(text_string_to_metric_families(text))
