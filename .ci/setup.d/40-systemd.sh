#!/usr/bin/env bash
# systemd-analyze, for tests/deploy.rs, which runs `systemd-analyze verify` on
# deploy/systemd/jobs_to_kafka.service. It needs no running systemd (PID 1 here is not systemd):
# verify loads the unit and its dependencies from the unit directories the package installs.
# Installed only when missing; apt does not start anything in a container without systemd.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_ensure systemd-analyze systemd --no-install-recommends
