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
want sqlite3 sqlite3
want swaks swaks
want openssl openssl
want cpio cpio
[ -x /usr/lib/git-core/git-send-email ] || [ -x "$(git --exec-path 2>/dev/null)/git-send-email" ] || need_apt+=(git-email)
python3 -c 'import aiosmtpd' >/dev/null 2>&1 || [ -d /usr/lib/python3/dist-packages/aiosmtpd ] || need_apt+=(python3-aiosmtpd)

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
echo "setup: ok" >&2
