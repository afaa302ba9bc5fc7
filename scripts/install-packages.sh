#!/usr/bin/env bash
# Installs tools from Debian's packages, each a tool on PATH and the package that provides it.
# Idempotent: a tool already on PATH (or in an sbin directory) is skipped, and apt-get update runs
# at most once, only when something is missing. Runs apt-get as root, through sudo when needed.
#
# Usage: bash scripts/install-packages.sh NAME TOOL...   (NAME says who asks, in messages)
set -euo pipefail

name="$1"
shift
tools=("$@")

have() {
  PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1
}

missing=()
for tool in "${tools[@]}"; do
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
  echo "$name: apt-get not found; install ${missing[*]} with this system's packager" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "$name: run as root (or install sudo) to install ${missing[*]}" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

for tool in "${missing[@]}"; do
  if ! have "$tool"; then
    echo "$name: $tool is still missing after apt-get install" >&2
    exit 1
  fi
done
echo "installed: ${missing[*]}"
