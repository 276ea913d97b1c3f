#!/usr/bin/env bash
# The jobs adapter's tests start their own redis-server on a free loopback port; install it when
# missing. apt does not start it as a service here, and the tests need no running instance.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_ensure redis-server redis-server
