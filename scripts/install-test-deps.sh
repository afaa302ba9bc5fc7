#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: redis-server (which also provides
# redis-cli), from Debian's packages; python/cellgate/redis_server.py runs throwaway instances.
# Idempotent: a tool already on PATH (or in an sbin directory) is skipped, and apt-get update runs
# at most once, only when something is missing. Runs apt-get as root, through sudo when needed.
#
# Usage: bash scripts/install-test-deps.sh
#
# Debian's redis-server package also enables its system service on port 6379; the tests do not
# use it (they run their own instances on free loopback ports). To stop it:
#   sudo systemctl disable --now redis-server
set -euo pipefail

# Each is both a tool and the Debian package that provides it (redis-server brings redis-cli).
TOOLS=(redis-server)

have() {
  PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1
}

missing=()
for tool in "${TOOLS[@]}"; do
  if have "$tool"; then
    echo "present: $tool"
  else
    missing+=("$tool")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "nothing to install"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: apt-get not found; install ${missing[*]} with this system's packager" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-test-deps: run as root (or install sudo) to install ${missing[*]}" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

for tool in "${missing[@]}"; do
  if ! have "$tool"; then
    echo "install-test-deps: $tool is still missing after apt-get install" >&2
    exit 1
  fi
done
echo "installed: ${missing[*]}"
