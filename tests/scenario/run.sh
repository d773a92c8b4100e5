#!/usr/bin/env bash
# One scenario through the three ways in: `patchline run` (the CLI), the HTTP
# API driven as curl would (POST a run, POST each stage, poll), and the real
# Jenkinsfile and shared library under the Groovy harness. The input is the
# demo mailing list plus one series that cannot apply (its patch was made on
# top of a commit the list never saw), so apply fails for that series and
# applies the others. All three must give the same stage states (apply
# `failed` but let through; build, publish, test and report run on what
# applied), the same run state (`failed`), the same branch trees and the same
# published packages. The state machine decides; the three only follow it.
#
# Tools come from scripts/setup.sh (groovy for the Jenkins part).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
cargo build --quiet --bin patchline
bin="$root/target/debug/patchline"
top="$(mktemp -d /tmp/patchline-scenario.XXXXXX)"
workers=()
cleanup() {
  for w in "${workers[@]}"; do kill "$w" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${PATCHLINE_KEEP_SITE:-}" ] || rm -rf "$top"
}
trap cleanup EXIT

# prepare SITE: the demo site, and a series for master that does not apply.
prepare() {
  local site="$1"
  mkdir -p "$site"
  cp -r examples/demo "$site/demo"
  PATCHLINE_DEMO_WORK="$site/demo-work" bash scripts/demo.sh --prepare-only >"$site/prepare.log" 2>&1 \
    || { cat "$site/prepare.log" >&2; exit 1; }
  local src="$site/demo-work/src/hello"
  export GIT_AUTHOR_NAME="Stale Author" GIT_AUTHOR_EMAIL="stale@example.org"
  export GIT_COMMITTER_NAME="Stale Author" GIT_COMMITTER_EMAIL="stale@example.org"
  export GIT_AUTHOR_DATE="2026-11-24T12:00:00Z" GIT_COMMITTER_DATE="2026-11-24T12:00:00Z"
  git -C "$src" checkout -q -b stale master
  printf 'hello: a README rewritten on a branch the list never saw.\n' >"$src/README"
  git -C "$src" commit -q -am "README: rewrite (never sent)"
  printf 'hello: the README, reworded again.\n' >"$src/README"
  git -C "$src" commit -q -am "README: reword" -m "Signed-off-by: Stale Author <stale@example.org>"
  git -C "$src" format-patch -q -1 --subject-prefix="master PATCH hello" --stdout >>"$site/demo-work/list.mbox"
}

# worker SITE: starts `patchline serve` on SITE; sets `url`.
worker() {
  local site="$1"
  openssl rand -hex 24 >"$site/token"
  "$bin" --config "$site/demo/patchline.toml" serve --bind 127.0.0.1:0 --token-file "$site/token" \
    >"$site/worker.out" 2>"$site/worker.log" &
  workers+=("$!")
  for _ in $(seq 100); do grep -q 'listening on' "$site/worker.log" && break; sleep 0.1; done
  url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$site/worker.log" | head -1)"
  [ -n "$url" ] || { cat "$site/worker.log" >&2; exit 1; }
}

# 1. The CLI.
prepare "$top/cli"
code=0
"$bin" --config "$top/cli/demo/patchline.toml" run --json >"$top/cli/status.json" 2>"$top/cli/run.log" || code=$?
[ "$code" -eq 1 ] || { cat "$top/cli/run.log" >&2; echo "scenario: patchline run exited $code, expected 1" >&2; exit 1; }

# 2. The API, as curl drives it.
prepare "$top/api"
worker "$top/api"
token="$(cat "$top/api/token")"
api() { curl -sS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
run="$(api -X POST -d '{"trigger": "api", "cause": "scenario"}' "$url/api/v1/runs" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
for stage in collect apply build publish test report; do
  code="$(api -o "$top/api/start-$stage.json" -w '%{http_code}' -X POST "$url/api/v1/runs/$run/stages/$stage")"
  if [ "$code" != 202 ]; then
    cat "$top/api/start-$stage.json" >&2; echo >&2
    echo "scenario: POST $stage: HTTP $code" >&2; exit 1
  fi
  while :; do
    view="$(api "$url/api/v1/runs/$run/stages/$stage")"
    state="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["state"])' "$view")"
    case "$state" in queued|running) sleep 0.2 ;; *) break ;; esac
  done
  continues="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["continues"])' "$view")"
  # A stage stopped by an error stops the pipeline; report always runs.
  if [ "$continues" != True ] && [ "$stage" != report ]; then
    api -X POST "$url/api/v1/runs/$run/stages/report" >/dev/null
    break
  fi
done
api "$url/api/v1/runs/$run" >"$top/api/run.json"

# 3. The Jenkinsfile under the harness.
prepare "$top/jenkins"
worker "$top/jenkins"
jurl="$url"
code=0
groovy tests/jenkins/harness.groovy --jenkinsfile Jenkinsfile --lib shared-lib \
  --workspace "$top/jenkins/ws" --url "$jurl" --token-file "$top/jenkins/token" --cause user \
  --build 1 --transcript "$top/jenkins/build.json" >"$top/jenkins/build.log" 2>&1 || code=$?
[ "$code" -eq 1 ] || { cat "$top/jenkins/build.log" >&2; echo "scenario: the Jenkins build exited $code, expected 1 (UNSTABLE)" >&2; exit 1; }
jrun="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"])' "$top/jenkins/build.json")"
curl -sS -H "Authorization: Bearer $(cat "$top/jenkins/token")" "$jurl/api/v1/runs/$jrun" >"$top/jenkins/run.json"

python3 - "$top" <<'PY'
import json, os, re, subprocess, sys
top = sys.argv[1]

def stages_of(doc):
    return {s["stage"]: s for s in doc["stages"]}

def tree(site, branch):
    return subprocess.run(["git", "-C", f"{top}/{site}/demo-work/repos/hello.git", "rev-parse", f"{branch}^{{tree}}"],
                          capture_output=True, text=True, check=True).stdout.strip()

def packages(site):
    """Published RPMs of the current repositories (the symlinks), the
    release's date and commit hash taken out (commits are made at run time)."""
    out = set()
    publish = f"{top}/{site}/demo-work/publish"
    for dirpath, _, files in os.walk(publish, followlinks=True):
        rel = os.path.relpath(dirpath, publish)
        if "/.snapshots" in "/" + rel or rel.split("/")[-1].startswith("."):
            continue
        for f in files:
            if f.endswith(".rpm"):
                out.add(re.sub(r"\.\d{8}git[0-9a-f]+", ".DATEgitSHA", f"{rel}/{f}"))
    return out

cli = json.load(open(f"{top}/cli/status.json"))
api = json.load(open(f"{top}/api/run.json"))
jen = json.load(open(f"{top}/jenkins/run.json"))
build = json.load(open(f"{top}/jenkins/build.json"))
views = {"cli": stages_of(cli), "api": stages_of(api), "jenkins": stages_of(jen)}
want = {"collect": "ok", "apply": "failed", "build": "ok", "publish": "ok", "test": "ok", "report": "ok"}
for name, st in views.items():
    got = {k: v["state"] for k, v in st.items()}
    assert got == want, f"{name}: stage states {got}, want {want}"
    a = st["apply"]["summary"]
    assert a["series_failed"] == 1 and a["series_applied"] == 3, f"{name}: apply {a}"
    assert "README: reword" in st["apply"]["error"], f"{name}: {st['apply']['error']}"
    assert st["build"]["summary"]["built"] == 4, f"{name}: build {st['build']['summary']}"
for name, doc in (("cli", cli), ("api", api), ("jenkins", jen)):
    assert doc["run"]["state"] == "failed" and doc["run"]["finished_at"], f"{name}: run {doc['run']}"
summaries = {n: {k: v["summary"].get("series_applied") for k, v in st.items()} for n, st in views.items()}
assert summaries["cli"] == summaries["api"] == summaries["jenkins"], summaries
for branch in ("master", "stable-1.0"):
    trees = {site: tree(site, branch) for site in ("cli", "api", "jenkins")}
    assert len(set(trees.values())) == 1, f"{branch} trees differ: {trees}"
pk = {site: packages(site) for site in ("cli", "api", "jenkins")}
assert pk["cli"] and pk["cli"] == pk["api"] == pk["jenkins"], pk
# Jenkins: apply unstable, the rest ok, the build UNSTABLE, report ran.
assert build["result"] == "UNSTABLE", build["result"]
assert [s["status"] for s in build["stages"]] == ["ok", "unstable", "ok", "ok", "ok"], build["stages"]
assert build["posts"] == [{"name": "always", "status": "ok"}], build["posts"]
print(f"scenario: CLI, API and Jenkins agree: stages {want}, {len(pk['cli'])} packages published")
PY
