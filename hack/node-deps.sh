#!/usr/bin/env bash
# Debian packages the local node (hack/localnode.py) and `make image` need, installed when
# missing. `make test` runs this on Linux as root; elsewhere it does nothing (the e2e tier
# then skips and says why).
set -euo pipefail

PACKAGES=(containerd runc iptables conntrack debootstrap buildah iproute2 util-linux)

if [[ $(uname -s) != Linux || $(id -u) != 0 ]]; then
  echo "node-deps: skipped (needs Linux and root)"
  exit 0
fi
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  echo "node-deps: not a Debian-based system; install: ${PACKAGES[*]}" >&2
  exit 0
fi
missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed'; then
    missing+=("$package")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "node-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing on a fresh machine; refresh them once on failure.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
