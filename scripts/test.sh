#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh machine, then runs them.
# The sandbox security suite (and the warm pool's) runs twice: as the user running this (root on CI) and, when that is
# root, again as an unprivileged user created for the purpose.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v bwrap >/dev/null 2>&1 || apt_packages+=(bubblewrap)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_packages+=(postgresql)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)  # renders `toolrail trace --html` in a test
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || apt_packages+=(libseccomp2)
if ((${#apt_packages[@]})); then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,server,postgres,e2b]"

# Each test has pytest-timeout's limit (pyproject); these outer limits are the last guard, so
# that a hang outside any test (collection, interpreter exit) still ends the run.
status=0
timeout --kill-after=30 2400 .venv/bin/python -m pytest -q "$@" || status=$?

if [ "$(id -u)" = 0 ] && [ -z "${TOOLRAIL_SKIP_UNPRIVILEGED_SUITE:-}" ]; then
  # The same security suite as an ordinary user. That user may not reach this checkout or our
  # interpreter (e.g. under /root, mode 700), so it gets a world-readable copy of the sources
  # and a venv built on the system Python; both are removed afterwards. No host mode changes.
  user=toolrail-test
  id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  copy=$(mktemp -d /tmp/toolrail-unprivileged-suite.XXXXXX)
  trap 'rm -rf "$copy"' EXIT
  tar --exclude=./.venv --exclude=./.git --exclude='*.pyc' --exclude=./.toolrail -cf - . | tar -xf - -C "$copy"
  system_python=/usr/bin/python3; [ -x "$system_python" ] || system_python=$(command -v python3)
  "$system_python" -m venv "$copy/.venv"
  "$copy/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$copy[dev]"
  chown -R "$user" "$copy"
  chmod 755 "$copy"
  echo "--- sandbox security suite as unprivileged user $user ($(id -u "$user")) ---"
  (cd "$copy" && timeout --kill-after=30 900 runuser -u "$user" -- env HOME="$copy" TMPDIR="$copy/tmp" sh -c \
    'mkdir -p "$TMPDIR" && exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_sandbox_security.py tests/test_sandbox_pool.py') || status=$?
fi
exit $status
