"""`make bench` / `make bench-quick`: how the operator scales, measured against the floor.

Runs against a real local control plane (kube-apiserver + etcd) and the Mixpeek emulator,
with the operator started through its entry point (`python -m mixpeek_operator run`):

1. bulk create   N BucketSyncs created at once (32 at a time) → all Ready, against the floor:
                 one remote create + one status patch per object, at the operator's --workers
                 concurrency, on N pre-created objects (and again with the creates running
                 alongside, the operator's timeline); full repeats it 3 times, the median counts
2. idle          the Ready fleet left alone: remote calls per observe interval, Kubernetes writes
3. churn         10% of the remote syncs change each round: status writes vs changed syncs
4. memory        operator RSS at 0 / N/10 / N objects (quick: 0 / 50 / 100), KB per object
5. edit latency  spec.batchSize patches, one at a time: patch → remote PATCH served

`--size huge` (hack/bench/huge.py) runs 1,000 then 10,000 objects over 50 buckets in one run:
the floor and bulk create at 1k, bulk create at 10k against the 1k time, RSS at 0 / 1k / 10k
and the slope, the per-object cost (tracemalloc), idle over 50 buckets, and a restart over
10,000 converged objects (remote calls, Kubernetes writes, time until caught up).

Every run installs the chart's MutatingAdmissionPolicy (rendered by helm against the running
API server) for the operator's namespaces, so the finalizer is added at CREATE as it is for
users; `--no-admission-policy` leaves it out (the operator writes the finalizer, an A/B run).

Writes bench-results/<size>-<timestamp>.json and bench-results/latest-<size>.json, and prints
a Markdown table with PASS/MISS against the targets. Every child process is stopped at the end.

    python -m hack.bench --size quick|full|huge [--profile] [--only bulk,idle,...] [--repeat K]
                         [-n N] [--huge-n N] [--workers W] [--operator-env KEY=VALUE]
                         [--no-admission-policy] [--quiet-wait SECONDS]

Runs with a non-default shape (-n, --huge-n, --only, --repeat, --profile, --operator-env,
--workers, --no-admission-policy) are
experiments: they write <size>-<timestamp>-experiment.json and leave latest-<size>.json alone.
"""

from __future__ import annotations

import sys

from hack.bench.main import main

if __name__ == "__main__":
    sys.exit(main())
