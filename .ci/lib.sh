# Shared by .ci/setup.d/*.sh: install a Debian package only when its command is missing.

# apt_ensure COMMAND PACKAGE [APT-GET INSTALL OPTIONS...]
apt_ensure() {
  local command=$1 package=$2
  shift 2
  if command -v "$command" >/dev/null 2>&1; then
    echo "$command present: $(command -v "$command")"
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y "$@" "$package"
  command -v "$command" >/dev/null 2>&1 || { echo "$package installed but $command not found" >&2; return 1; }
}
