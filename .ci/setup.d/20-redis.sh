#!/usr/bin/env bash
# The jobs adapter's tests start their own redis-server on a free loopback port; install it when
# missing. apt does not start it as a service here, and the tests need no running instance.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server present: $(redis-server --version)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO apt-get install -y redis-server
redis-server --version
