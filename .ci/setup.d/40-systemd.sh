#!/usr/bin/env bash
# systemd-analyze, for tests/deploy.rs, which runs `systemd-analyze verify` on
# deploy/systemd/jobs_to_kafka.service. It needs no running systemd (PID 1 here is not systemd):
# verify loads the unit and its dependencies from the unit directories the package installs.
# Installed only when missing; apt does not start anything in a container without systemd.
set -euo pipefail
if command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze present: $(systemd-analyze --version | head -n 1)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends systemd
systemd-analyze --version | head -n 1
