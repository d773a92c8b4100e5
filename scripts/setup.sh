#!/usr/bin/env bash
# Installs everything patchline's demo and test suite need on a fresh Debian
# machine. Idempotent: packages already present are skipped quickly.
set -euo pipefail

need_apt=()
want() { # want COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || need_apt+=("$2")
}
want dovecot dovecot-imapd
want rpmbuild rpm
want createrepo_c createrepo-c
# dnf (4.14) queries and installs the published repositories as a user's
# would, into an installroot (worker/tests/it/dnf.rs).
want dnf dnf
# patchline's own package (tests/dist/): rpmlint, and systemd-analyze to
# verify its units.
want rpmlint rpmlint
want systemd-analyze systemd
want sqlite3 sqlite3
want swaks swaks
want openssl openssl
# The scenario test drives the HTTP API as curl users do.
want curl curl
want cpio cpio
# The status page's test loads its pages in headless Chromium
# (worker/tests/it/status_page.rs).
want chromium chromium
# A real public-inbox archive for the public-inbox source's test.
want public-inbox-init public-inbox
# gitoxide's HTTP transport is libcurl's (docs/decisions.md): the build links
# the system libcurl, found with pkg-config.
want pkg-config pkg-config
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libcurl; } || need_apt+=(libcurl4-openssl-dev)
[ -x /usr/lib/git-core/git-send-email ] || [ -x "$(git --exec-path 2>/dev/null)/git-send-email" ] || need_apt+=(git-email)
# The Jenkins harness (tests/jenkins/): Groovy (with the installed Java),
# a venv for jenkins-job-builder, npm for npm-groovy-lint.
want groovy groovy
want npm npm
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
python3 -c 'import aiosmtpd' >/dev/null 2>&1 || [ -d /usr/lib/python3/dist-packages/aiosmtpd ] || need_apt+=(python3-aiosmtpd)
# The koji CLI (tests run it against the hub double): Debian's python with
# its rpm bindings (download-build checks RPM headers) and venv.
[ -d /usr/lib/python3/dist-packages/rpm ] || need_apt+=(python3-rpm)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian starts dovecot as a system service on install; the tests run their
# own throw-away instances, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1; then systemctl stop dovecot >/dev/null 2>&1 || true; fi
tools="$(cd "$(dirname "$0")/.." && pwd)/.tools"
if [ ! -x "$tools/jenkins-venv/bin/jenkins-jobs" ]; then
  echo "setup: installing jenkins-job-builder into $tools/jenkins-venv" >&2
  python3 -m venv "$tools/jenkins-venv"
  "$tools/jenkins-venv/bin/pip" install -q jenkins-job-builder==6.5.0
fi
# b4 (PyPI), the reference scripts/compare-b4.py compares series with.
if [ ! -x "$tools/b4-venv/bin/b4" ]; then
  echo "setup: installing b4 into $tools/b4-venv" >&2
  python3 -m venv "$tools/b4-venv"
  "$tools/b4-venv/bin/pip" install -q b4==0.16.0
fi
if [ ! -x "$tools/npm/node_modules/.bin/npm-groovy-lint" ]; then
  echo "setup: installing npm-groovy-lint into $tools/npm" >&2
  npm install --prefix "$tools/npm" --no-audit --no-fund --silent npm-groovy-lint@16.2.0
fi

# The real koji client, in a virtualenv beside the checkout (system Python
# stays clean). --no-deps: its requests-gssapi needs Kerberos headers, and
# patchline's tests log in with a password.
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-koji"
if ! "$venv/bin/python" -c 'import koji, rpm' >/dev/null 2>&1; then
  echo "setup: installing the koji client in $venv" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps koji
  "$venv/bin/pip" install -q --disable-pip-version-check requests python-dateutil six defusedxml 2>&1 \
    | grep -v "requests-gssapi\|dependency resolver\|dependency conflicts" >&2 || true
  "$venv/bin/python" -c 'import koji, rpm'
fi
echo "setup: ok" >&2
