#!/usr/bin/env bash
# Installs what benches/e2e_load.py drives: nginx, haproxy and wrk (and valgrind), from Debian's
# packages; its Redis peers also need redis-server (scripts/install-test-deps.sh).
#
# Usage: bash scripts/install-bench-deps.sh
#
# Debian's nginx and haproxy packages also enable their system services; the benchmark does not
# use them (it runs its own instances on free loopback ports). To stop them:
#   sudo systemctl disable --now nginx haproxy
set -euo pipefail
exec bash "$(dirname "$0")/install-packages.sh" install-bench-deps nginx haproxy wrk valgrind
