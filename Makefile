# One command runs the main job (`make demo`), one runs every test (`make test`).
# Each installs what it needs: a virtualenv with the project, and the Kubernetes
# binaries (built from the Go module proxy once, cached in ~/.cache/mixpeek-operator).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLUSTER_DIR := .local/cluster
NODE_DIR := .local/node
PYTEST_ARGS ?=

.PHONY: help venv binaries node-deps lint test unit integration e2e cluster cluster-down node node-down image demo demo-down crd bench bench-quick bench-huge clean

help:
	@echo "make demo          local control plane + emulator + operator + sample BucketSyncs (the main job)"
	@echo "make demo-down     stop what make demo started"
	@echo "make test          every test: lint, type check, unit, integration (real kube-apiserver + etcd),"
	@echo "                   e2e (the chart's operator pod on a real local node; Linux, root)"
	@echo "make lint          ruff, ruff format --check, mypy, import-linter, actionlint"
	@echo "make unit          the unit tier (no cluster)"
	@echo "make integration   the integration tier (a real kube-apiserver + etcd, the emulator, the operator)"
	@echo "make e2e           the e2e tier (a real local node; Linux, root)"
	@echo "make venv          the virtualenv (.venv) with the project and its dev tools"
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
	@echo "make clean         stop everything above and remove .venv, .local and the caches in the repo"
	@echo "make help          this list"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

binaries: $(STAMP) node-deps
	$(BIN)/python hack/k8sbuild.py kubernetes helm
	$(BIN)/python hack/gotools.py actionlint promtool argocd-health kstatus
	@if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ]; then $(BIN)/python hack/k8sbuild.py node cni pause; fi

# Debian packages for the local node and `make image` (only on Linux as root; else a no-op).
node-deps:
	@bash hack/node-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check operator hack tests
	$(BIN)/ruff format --check operator hack tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$$($(BIN)/python hack/gotools.py actionlint) -shellcheck $(BIN)/shellcheck

test: lint binaries
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not e2e" $(PYTEST_ARGS)

integration: binaries
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

e2e: binaries
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

cluster: binaries
	@$(BIN)/python hack/localcluster.py up --dir $(CLUSTER_DIR) > /dev/null
	@echo "local control plane running; use it with:"
	@echo "  export KUBECONFIG=$(abspath $(CLUSTER_DIR))/kubeconfig"

cluster-down: $(STAMP)
	@$(BIN)/python hack/localcluster.py down --dir $(CLUSTER_DIR)

node: binaries
	@$(BIN)/python hack/localnode.py up --dir $(NODE_DIR) > /dev/null
	@echo "local node running; use it with:"
	@echo "  export KUBECONFIG=$(abspath $(NODE_DIR))/kubeconfig"

node-down: $(STAMP)
	@$(BIN)/python hack/localnode.py down --dir $(NODE_DIR)

image: $(STAMP) node-deps
	@$(BIN)/python hack/image.py --node-dir $(NODE_DIR)

demo: binaries
	@$(BIN)/python hack/demo.py up

demo-down: $(STAMP)
	@$(BIN)/python hack/demo.py down

crd: $(STAMP)
	$(BIN)/mixpeek-operator crd --write
	$(BIN)/python hack/gen_reference.py

clean: cluster-down node-down demo-down
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache

bench: binaries
	$(BIN)/python hack/bench.py --size full

bench-quick: binaries
	$(BIN)/python hack/bench.py --size quick

bench-huge: binaries
	$(BIN)/python hack/bench.py --size huge
