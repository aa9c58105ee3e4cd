# One command runs the main job (`make demo`), one runs every test (`make test`).
# Each installs what it needs and nothing more: `make demo` a virtualenv with the operator
# and its emulator plus kube-apiserver, etcd and kubectl (built from the Go module proxy once,
# cached in ~/.cache/mixpeek-operator); `make test` the dev tools, every Go-built checker and,
# on Linux as root, the local node's Debian packages.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's smaller install (operator, emulator, local control plane; no dev tools); the full one implies it.
DEMO_STAMP := $(VENV)/.installed-demo
CLUSTER_DIR := .local/cluster
NODE_DIR := .local/node
PYTEST_ARGS ?=

.PHONY: help venv binaries control-plane node-deps lint docs test unit packaging tools integration e2e cluster cluster-down node node-down image demo demo-down crd bench bench-quick bench-huge bench-shards bench-soak bench-buckets clean

help:
	@echo "make demo          local control plane + emulator + operator + sample BucketSyncs (the main job)"
	@echo "make demo-down     stop what make demo started"
	@echo "make test          every test: lint, type check, unit, integration (real kube-apiserver + etcd),"
	@echo "                   e2e (the chart's operator pod on a real local node; Linux, root), docs site"
	@echo "make lint          ruff, ruff format --check, mypy, import-linter, actionlint"
	@echo "make unit          the unit tier: pure Python (operator, Mixpeek client, emulator); no cluster, no Go"
	@echo "make packaging     the chart, image, docs, release and CI files as shipped, and hack/; no cluster, no Go"
	@echo "make tools         the checks run by helm, promtool, Argo CD's and kstatus' own Go code"
	@echo "make integration   the integration tier (a real kube-apiserver + etcd, the emulator, the operator)"
	@echo "make e2e           the e2e tier (a real local node; Linux, root)"
	@echo "make docs          build the documentation site (MkDocs, strict) into .local/site"
	@echo "make venv          the virtualenv (.venv) with the project and its dev tools"
	@echo "make control-plane build only what make demo and make cluster run: etcd, kube-apiserver, kubectl"
	@echo "make binaries      build the Go binaries the tests use (cached in ~/.cache/mixpeek-operator)"
	@echo "make node-deps     Debian packages for the local node and make image (Linux, root; else nothing)"
	@echo "make cluster       start a local control plane in the background; prints the kubeconfig"
	@echo "make cluster-down  stop it"
	@echo "make node          a real node (kubelet + containerd) in a network namespace; prints the kubeconfig"
	@echo "make node-down     stop it and remove everything it created"
	@echo "make image         build the operator image here (buildah) and load it into the node; prints its ref"
	@echo "make crd           regenerate crds/, the chart's copy and the reference docs from the models"
	@echo "make bench         benchmarks at N=1000"
	@echo "make bench-quick   benchmarks at N=100"
	@echo "make bench-huge    benchmarks at 1k and 10k objects"
	@echo "make bench-shards  label shards: 40,000 objects over 4 replicas vs one; a 5th joins, one is killed"
	@echo "make bench-soak    months of churn compressed: RSS and every internal map per wave"
	@echo "make bench-buckets 5,000 objects in one bucket vs over fifty: create and delete times"
	@echo "make clean         stop everything above and remove .venv, .local and the caches in the repo"
	@echo "make help          this list"

PYTHON_CHECK := $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required" >&2; exit 1; }

$(STAMP): pyproject.toml
	@$(PYTHON_CHECK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	@$(PYTHON_CHECK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo]'
	@touch $@

venv: $(STAMP)

# What `make demo` and `make cluster` run: etcd, kube-apiserver, kubectl. Nothing else.
control-plane: $(DEMO_STAMP)
	@$(BIN)/python -m hack.k8sbuild kubernetes > /dev/null

binaries: $(STAMP) node-deps
	$(BIN)/python -m hack.k8sbuild kubernetes helm
	$(BIN)/python -m hack.gotools actionlint promtool argocd-health kstatus
	@if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ]; then $(BIN)/python -m hack.k8sbuild node cni pause && $(BIN)/python -m hack.gotools coredns; fi

# Debian packages for the local node and `make image` (only on Linux as root; else a no-op).
node-deps:
	@bash hack/node-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check operator hack tests
	$(BIN)/ruff format --check operator hack tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$$($(BIN)/python -m hack.gotools actionlint) -shellcheck $(BIN)/shellcheck

test: lint binaries
	$(BIN)/pytest $(PYTEST_ARGS)

# No Go, no cluster: the operator, the Mixpeek client and the emulator (and the Mixpeek API
# contract against the emulator). Each tier is run by its folder, so only its modules are imported.
# On every core (pytest-xdist): 929 tests took 70 s in one process, 38–43 s in two on 2 cores.
unit: $(STAMP)
	$(BIN)/pytest -n auto tests/unit tests/contract $(PYTEST_ARGS)

# No Go, no cluster: generated files, the Dockerfile, the docs site, the release, CI, hack/.
packaging: $(STAMP)
	$(BIN)/pytest tests/packaging tests/hack $(PYTEST_ARGS)

# Our output judged by the ecosystem's own Go programs (helm, promtool, Argo CD, kstatus).
tools: binaries
	$(BIN)/pytest tests/tools $(PYTEST_ARGS)

# The documentation site (MkDocs), strict: a broken link or anchor fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir .local/site

integration: binaries
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: binaries
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

cluster: control-plane
	@$(BIN)/python -m hack.localcluster up --dir $(CLUSTER_DIR) > /dev/null
	@echo "local control plane running; use it with:"
	@echo "  export KUBECONFIG=$(abspath $(CLUSTER_DIR))/kubeconfig"

cluster-down: $(DEMO_STAMP)
	@$(BIN)/python -m hack.localcluster down --dir $(CLUSTER_DIR)

node: binaries
	@$(BIN)/python -m hack.localnode up --dir $(NODE_DIR) > /dev/null
	@echo "local node running; use it with:"
	@echo "  export KUBECONFIG=$(abspath $(NODE_DIR))/kubeconfig"

node-down: $(STAMP)
	@$(BIN)/python -m hack.localnode down --dir $(NODE_DIR)

image: $(STAMP) node-deps
	@$(BIN)/python -m hack.localnode load-image --dir $(NODE_DIR)

demo: control-plane
	@$(BIN)/python -m hack.demo up

demo-down: $(DEMO_STAMP)
	@$(BIN)/python -m hack.demo down

crd: $(STAMP)
	$(BIN)/mixpeek-operator crd --write
	$(BIN)/python -m hack.gen_reference

clean: cluster-down node-down demo-down
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache

bench: binaries
	$(BIN)/python -m hack.bench --size full

bench-quick: binaries
	$(BIN)/python -m hack.bench --size quick

bench-huge: binaries
	$(BIN)/python -m hack.bench --size huge

bench-shards: binaries
	$(BIN)/python -m hack.bench.shards

# In process against the emulator (no control plane needed); see hack/bench/soak.py.
bench-soak: $(STAMP)
	$(BIN)/python -m hack.bench.soak soak

bench-buckets: $(STAMP)
	$(BIN)/python -m hack.bench.soak buckets
