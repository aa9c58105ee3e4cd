#!/usr/bin/env bash
# Times `make demo` as a newcomer meets it: cold (empty binary, Go module, Go build and pip
# caches, in a temporary directory) and then warm, with the machine's load sampled meanwhile,
# and lists anything written in $HOME outside the repository and those caches. Run it as a
# non-root user from a fresh clone with no .venv (for example: useradd -m demo; clone as demo;
# `runuser -u demo -- bash hack/time-demo.sh`).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [[ $(id -u) == 0 ]]; then
  echo "time-demo: run it as a non-root user (make demo never needs root)" >&2
  exit 2
fi
caches=$(mktemp -d)
export MIXPEEK_OPERATOR_CACHE=$caches/mixpeek GOMODCACHE=$caches/gomod GOCACHE=$caches/gobuild PIP_CACHE_DIR=$caches/pip
marker=$(mktemp)
(while true; do cut -d' ' -f1 /proc/loadavg; sleep 10; done) > "$caches/load" &
sampler=$!
trap 'kill $sampler 2>/dev/null; make demo-down >/dev/null 2>&1' EXIT

run() {
  local started=$SECONDS
  make demo > "$caches/demo-$1.log" 2>&1 || { echo "make demo ($1) failed, see $caches/demo-$1.log" >&2; exit 1; }
  echo "$1: $((SECONDS - started)) s"
  make demo-down > /dev/null 2>&1
}
run cold
run warm
awk '{sum += $1; n++} END {printf "mean 1-minute load average meanwhile: %.1f on %d cores\n", sum / n, '"$(nproc)"'}' "$caches/load"
echo "written in \$HOME outside the repository and the caches:"
find "$HOME" -newer "$marker" -not -path "$PWD*" -not -path "$caches*" -print | head -20
