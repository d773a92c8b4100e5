#!/usr/bin/env bash
# The RPM package of patchline itself (dist/patchline.spec), built and
# installed as a packager and an operator would: a source tarball from
# `git archive HEAD` (committed work only: uncommitted changes are not in
# the package, and a warning says so), `rpmbuild -ba` in a throw-away
# _topdir with the debug profile reusing this checkout's target/ (a
# release build would take ~13 minutes on two cores), rpmlint (errors
# fail, warnings are listed), the binary RPM installed into an empty root
# (`rpm --root --nodeps --noscripts`: Debian has none of its
# dependencies), the installed binary run, every file checked where the
# spec puts it, and the systemd units checked with `systemd-analyze
# verify` against that root.
#
# Tools come from scripts/setup.sh. A missing rpmlint or systemd-analyze
# fails the run when CI=true and skips that part (loudly) otherwise.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
passed=0 failed=0
ok() { echo "dist: ok: $*"; passed=$((passed + 1)); }
bad() { echo "dist: FAILED: $*" >&2; failed=$((failed + 1)); }
missing() {
  if [ "${CI:-}" = true ]; then bad "$1 is not installed (run scripts/setup.sh)"; else echo "dist: SKIPPED: $1 is not installed (run scripts/setup.sh)" >&2; fi
}
finish() {
  echo "dist: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

tmp="$(mktemp -d /tmp/patchline-dist.XXXXXX)"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "${PATCHLINE_KEEP_DIST:-}" ] && trap - EXIT

# --- the spec's version is the crate's
version="$(sed -n 's/^Version: *//p' dist/patchline.spec)"
crate="$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' worker/Cargo.toml)"
if [ -n "$version" ] && [ "$version" = "$crate" ]; then
  ok "spec Version $version is worker/Cargo.toml's"
else
  bad "spec Version '$version' differs from worker/Cargo.toml's '$crate'"
  finish
fi

# --- the source tarball and rpmbuild -ba
if [ -n "$(git status --porcelain -- worker dist Cargo.toml Cargo.lock kojiwire)" ]; then
  echo "dist: warning: uncommitted changes are not in the package (it is built from HEAD)" >&2
fi
top="$tmp/rpmbuild"
mkdir -p "$top/SOURCES"
git archive --format=tar.gz --prefix="patchline-$version/" -o "$top/SOURCES/patchline-$version.tar.gz" HEAD
cp dist/patchline.sysusers "$top/SOURCES/"
# --nodeps: the BuildRequires are Fedora's packages, not in Debian's rpm
# database. rpm's build preamble appends to PKG_CONFIG_PATH, and curl-sys
# and libz-sys rerun their build scripts when it changes (gix and all above
# it then rebuild, once for the package and again for this tree): unset, the
# package reuses target/ as the suite built it and only patchline itself
# (at another path) is compiled. A fast payload compressor keeps it quick.
# cargo tells the tarball's crates from this tree's by their mtimes only
# (same names, same relative paths): with this tree's profile, the
# package would get this tree's build, uncommitted changes and all. A
# profile override of their own (config in an ancestor of rpmbuild's
# build directory) gives them their own artifacts, built from the tarball.
mkdir -p "$tmp/.cargo"
cat >"$tmp/.cargo/config.toml" <<'EOF'
[profile.dev.package.patchline]
debug = "line-tables-only"
[profile.dev.package.kojiwire]
debug = "line-tables-only"
EOF
restore='unset PKG_CONFIG_PATH'
[ -n "${PKG_CONFIG_PATH+set}" ] && restore="export PKG_CONFIG_PATH='$PKG_CONFIG_PATH'"
start=$SECONDS
if CARGO_TARGET_DIR="$root/target" rpmbuild -ba --nodeps \
     --define "_topdir $top" --define "cargo_profile dev" \
     --define "__spec_build_pre %{___build_pre}"$'\\\n'"$restore" \
     --define "debug_package %{nil}" --define "_binary_payload w1.gzdio" \
     dist/patchline.spec >"$tmp/rpmbuild.log" 2>&1; then
  ok "rpmbuild -ba dist/patchline.spec ($((SECONDS - start)) s)"
else
  tail -50 "$tmp/rpmbuild.log" >&2; bad "rpmbuild -ba dist/patchline.spec"
  finish
fi
rpm_file="$(ls "$top"/RPMS/*/patchline-"$version"-1*.rpm)"
srpm_file="$(ls "$top"/SRPMS/patchline-"$version"-1*.src.rpm)"
# rpmbuild's cargo wrote this tree's target/debug/patchline from HEAD's
# sources; put the working tree's back for the tests that run it.
cargo build --quiet --bin patchline

# --- rpmlint: errors fail, warnings are listed
if command -v rpmlint >/dev/null 2>&1; then
  rpmlint -r dist/patchline.rpmlintrc dist/patchline.spec "$srpm_file" "$rpm_file" >"$tmp/rpmlint.log" 2>&1 || true
  grep ': W: ' "$tmp/rpmlint.log" | sed 's/^/dist: rpmlint warning: /' >&2 || true
  if grep -q ': E: ' "$tmp/rpmlint.log"; then
    cat "$tmp/rpmlint.log" >&2; bad "rpmlint"
  else
    ok "rpmlint: no errors ($(grep -c ': W: ' "$tmp/rpmlint.log" || true) warnings)"
  fi
else
  missing rpmlint
fi

# --- installed into an empty root
inst="$tmp/root"
mkdir -p "$inst"
if rpm --root "$inst" --initdb && rpm --root "$inst" -i --nodeps --noscripts "$rpm_file" 2>"$tmp/install.log"; then
  ok "rpm --root -i $(basename "$rpm_file")"
else
  cat "$tmp/install.log" >&2; bad "rpm --root -i"
  finish
fi
# The user does not exist in the empty root: rpm says so and uses root.
grep -v 'user patchline does not exist\|group patchline does not exist\|^rpm: RPM should not be used directly\|^rpm: However assuming' "$tmp/install.log" >&2 || true

files_ok=true
expect_file() { # expect_file PATH MODE
  local f="$inst$1" mode
  if [ ! -e "$f" ]; then echo "dist: missing $1" >&2; files_ok=false; return; fi
  mode="$(stat -c %a "$f")"
  [ "$mode" = "$2" ] || { echo "dist: $1 has mode $mode, not $2" >&2; files_ok=false; }
}
expect_file /usr/bin/patchline 755
expect_file /usr/lib/systemd/system/patchline-serve.service 644
expect_file /usr/lib/systemd/system/patchline-run.service 644
expect_file /usr/lib/systemd/system/patchline-run.timer 644
expect_file /usr/lib/systemd/system/patchline-.service.d/50-hardening.conf 644
expect_file /usr/lib/sysusers.d/patchline.conf 644
expect_file /etc/patchline 750
expect_file /etc/patchline/patchline.toml 640
expect_file /var/lib/patchline 750
expect_file /usr/share/doc/patchline/README.md 644
expect_file /usr/share/doc/patchline/docs/jenkins.md 644
# Owners and flags as the package records them (the empty root has no
# such user, so the files on disk are root's).
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" >"$tmp/files.txt"
grep -q '^-rw-r----- root:patchline cn /etc/patchline/patchline.toml$' "$tmp/files.txt" \
  || { echo "dist: /etc/patchline/patchline.toml is not %config(noreplace) root:patchline 0640" >&2; files_ok=false; }
grep -q '^drwxr-x--- patchline:patchline  /var/lib/patchline$' "$tmp/files.txt" \
  || { echo "dist: /var/lib/patchline is not patchline:patchline 0750" >&2; files_ok=false; }
if $files_ok; then ok "every file where the spec puts it"; else cat "$tmp/files.txt" >&2; bad "installed files"; fi

# --- the installed binary runs, and takes the units' command lines
bin="$inst/usr/bin/patchline"
if out="$("$bin" --version 2>&1)" && [ "$out" = "patchline $version" ] \
   && "$bin" --help | grep -q 'serve' && "$bin" run --help | grep -q -- '--trigger'; then
  ok "installed patchline --version ($out), --help"
else
  echo "$out" >&2; bad "installed patchline --version / --help"
fi
units_ok=true
for unit in patchline-serve.service patchline-run.service; do
  exec_start="$(sed -n 's/^ExecStart=//p' "$inst/usr/lib/systemd/system/$unit")"
  # shellcheck disable=SC2086 # the unit's words, as systemd splits them
  set -- $exec_start
  [ "$1" = /usr/bin/patchline ] || { echo "dist: $unit runs $1" >&2; units_ok=false; continue; }
  shift
  # clap refuses an unknown flag or value before it reaches --help.
  "$bin" "$@" --help >/dev/null 2>"$tmp/exec.log" || { echo "dist: $unit: $exec_start:" >&2; cat "$tmp/exec.log" >&2; units_ok=false; }
done
# The example configuration loads (its secrets' files and the state
# database elsewhere, through the PATCHLINE_ variables).
echo "imap-password" >"$tmp/imap-password"
# `status` of an empty database says so (exit 2) once the file loaded.
PATCHLINE_INTAKE__IMAP__PASSWORD_FILE="$tmp/imap-password" PATCHLINE_STATE__DB="$tmp/state.db" \
  "$bin" --config "$inst/etc/patchline/patchline.toml" status >"$tmp/status.log" 2>&1 || true
if ! grep -q '^patchline: no runs yet in ' "$tmp/status.log"; then
  echo "dist: the example configuration does not load:" >&2; cat "$tmp/status.log" >&2; units_ok=false
fi
if $units_ok; then ok "the units' command lines and the example configuration are accepted"; else bad "units' command lines"; fi

# --- systemd-analyze verify, against the installed root (with this
# machine's units beside patchline's: the targets they are ordered after).
# Any message naming a patchline file fails it, warnings too.
if command -v systemd-analyze >/dev/null 2>&1; then
  cp -rn /usr/lib/systemd/system/. "$inst/usr/lib/systemd/system/"
  if systemd-analyze verify --root="$inst" \
       /usr/lib/systemd/system/patchline-serve.service \
       /usr/lib/systemd/system/patchline-run.service \
       /usr/lib/systemd/system/patchline-run.timer >"$tmp/verify.log" 2>&1 \
     && ! grep -i 'patchline' "$tmp/verify.log" >/dev/null; then
    ok "systemd-analyze verify (serve, run, timer)"
  else
    cat "$tmp/verify.log" >&2; bad "systemd-analyze verify"
  fi
  # The sandbox, as systemd rates it (informational).
  systemd-analyze security --offline=yes --root="$inst" patchline-serve.service 2>/dev/null \
    | tail -1 | sed 's/^/dist: patchline-serve.service /' || true
else
  missing systemd-analyze
fi

finish
