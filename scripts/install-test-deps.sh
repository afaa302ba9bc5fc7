#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: redis-server (which also provides
# redis-cli), from Debian's packages; python/cellgate/redis_server.py runs throwaway instances.
#
# Usage: bash scripts/install-test-deps.sh
#
# Debian's redis-server package also enables its system service on port 6379; the tests do not
# use it (they run their own instances on free loopback ports). To stop it:
#   sudo systemctl disable --now redis-server
set -euo pipefail
exec bash "$(dirname "$0")/install-packages.sh" install-test-deps redis-server
