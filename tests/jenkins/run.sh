#!/usr/bin/env bash
# The Jenkins side, without Jenkins: runs the real Jenkinsfile and shared
# library under the Groovy harness against a live `patchline serve` on
# loopback with the demo configuration ("Build Now", a timer build, a
# build whose collect stage fails but still reports, and one with a series
# that does not apply), renders the job YAML
# with `jenkins-jobs test`, and lints the Groovy with npm-groovy-lint.
#
# Tools come from scripts/setup.sh. A missing tool fails the run when
# CI=true and skips that part (loudly) otherwise.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
tools="$root/.tools"
passed=0 failed=0
ok() { echo "jenkins: ok: $*"; passed=$((passed + 1)); }
bad() { echo "jenkins: FAILED: $*" >&2; failed=$((failed + 1)); }
missing() {
  if [ "${CI:-}" = true ]; then bad "$1 is not installed (run scripts/setup.sh)"; else echo "jenkins: SKIPPED: $1 is not installed (run scripts/setup.sh)" >&2; fi
}
export JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"

# --- jenkins-jobs test: the job definition renders
if [ -x "$tools/jenkins-venv/bin/jenkins-jobs" ]; then
  out="$(mktemp -d)"
  if "$tools/jenkins-venv/bin/jenkins-jobs" test jenkins/jobs.yaml -o "$out" >"$out.log" 2>&1 \
     && grep -q '<flow-definition' "$out/patchline" && grep -q 'H 2 \* \* 1-5' "$out/patchline" \
     && grep -q '<scriptPath>Jenkinsfile</scriptPath>' "$out/patchline"; then
    ok "jenkins-jobs test jenkins/jobs.yaml"
  else
    cat "$out.log" >&2; bad "jenkins-jobs test jenkins/jobs.yaml"
  fi
  rm -rf "$out" "$out.log"
else
  missing jenkins-jobs
fi

# --- npm-groovy-lint: no errors in the library, the Jenkinsfile, the harness
if [ -x "$tools/npm/node_modules/.bin/npm-groovy-lint" ]; then
  if "$tools/npm/node_modules/.bin/npm-groovy-lint" --failon error --noserver --output txt \
       shared-lib/vars Jenkinsfile tests/jenkins/harness.groovy >/tmp/patchline-groovy-lint.out 2>&1; then
    ok "npm-groovy-lint"
  else
    cat /tmp/patchline-groovy-lint.out >&2; bad "npm-groovy-lint"
  fi
else
  missing npm-groovy-lint
fi

# --- the Jenkinsfile under the harness, against a live worker
if ! command -v groovy >/dev/null 2>&1; then
  missing groovy
  echo "jenkins: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]; exit
fi
cargo build --quiet --bin patchline
bin="$root/target/debug/patchline"
site="$(mktemp -d /tmp/patchline-jenkins.XXXXXX)"
worker=""
cleanup() { [ -n "$worker" ] && kill "$worker" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$site"; }
trap cleanup EXIT
[ -n "${PATCHLINE_KEEP_SITE:-}" ] && trap - EXIT
cp -r examples/demo "$site/demo"
PATCHLINE_DEMO_WORK="$site/demo-work" bash scripts/demo.sh --prepare-only >"$site/demo.log" 2>&1 \
  || { cat "$site/demo.log" >&2; exit 1; }
openssl rand -hex 24 >"$site/token"
"$bin" --config "$site/demo/patchline.toml" serve --bind 127.0.0.1:0 --token-file "$site/token" 2>"$site/worker.log" &
worker=$!
for _ in $(seq 100); do grep -q 'listening on' "$site/worker.log" && break; sleep 0.1; done
url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$site/worker.log" | head -1)"
[ -n "$url" ] || { cat "$site/worker.log" >&2; exit 1; }

build() { # build NUMBER CAUSE EXPECTED_EXIT [--param K=V]...
  local n="$1" cause="$2" expect="$3"; shift 3
  local code=0
  groovy tests/jenkins/harness.groovy --jenkinsfile Jenkinsfile --lib shared-lib \
    --workspace "$site/ws$n" --url "$url" --token-file "$site/token" --cause "$cause" \
    --build "$n" --transcript "$site/build$n.json" "$@" >"$site/build$n.log" 2>&1 || code=$?
  if [ "$code" -ne "$expect" ]; then
    cat "$site/build$n.log" >&2; echo "--- worker" >&2; cat "$site/worker.log" >&2
    return 1
  fi
}
check() { # check NAME PYTHON-ASSERTIONS (t: transcript, run: the worker's run)
  local n="$1"; shift
  if python3 - "$site/build$n.json" "$url" "$site/token" "$site/build$n.log" "$@" <<'PY'
import json, re, sys, urllib.request
t = json.load(open(sys.argv[1]))
url, token, log = sys.argv[2], open(sys.argv[3]).read().strip(), open(sys.argv[4]).read()
req = urllib.request.Request(f"{url}/api/v1/runs/{t['run']}", headers={"Authorization": f"Bearer {token}"})
run = json.load(urllib.request.urlopen(req))
stages = {s["stage"]: s for s in run["stages"]}
assert token not in log and token not in json.dumps(t), "the token reached the console"
exec(sys.argv[5])
PY
  then return 0; else cat "$site/build$n.log" >&2; return 1; fi
}

# "Build Now": every stage ok, the junit file holds the 5 patches, the 4
# target builds, the 8 tests (2 per build) and the 4 series (3 applied, 1
# held: skipped), each series linked to its status page; the build's
# description links to the run's page and counts the series; the run is
# finished and named the user.
if build 1 user 0 && check 1 '
assert t["result"] == "SUCCESS", t["result"]
assert [s["status"] for s in t["stages"]] == ["ok"] * 5, t["stages"]
assert t["posts"] == [{"name": "always", "status": "ok"}], t["posts"]
junit = next(s for s in t["steps"] if s["step"] == "junit")
assert junit["tests"] == 21 and junit["failures"] == 0, junit
series = [c for c in junit["cases"] if c["classname"].startswith("series.")]
assert sorted(c["status"] for c in series) == ["passed"] * 3 + ["skipped"], series
held = next(c for c in series if c["status"] == "skipped")
assert held["message"].startswith("held: received "), held
assert all(re.match(r"^status page: /ui/series/\d+\n", c["out"]) for c in series), series
assert all(re.match(r".* v\d+ \(\d+ patch(es)?\)$", c["name"]) for c in series), series
page = "/ui/runs/" + t["run"]
assert junit["properties"] and all(p == {"url": page} for p in junit["properties"]), junit["properties"]
link = "<a href=\"" + url + page + "\">patchline run " + t["run"] + "</a>"
assert t["description"] == link + "<br>3 applied, 0 failed, 1 held", t["description"]
assert run["run"]["trigger"] == "manual" and run["run"]["started_by"] == "ada", run["run"]
assert run["run"]["jenkins_url"].endswith("/job/patchline/1/"), run["run"]
assert run["run"]["finished_at"] and run["run"]["state"] == "ok", run["run"]
for s in ("collect", "apply", "build", "publish", "test", "report"):
    assert stages[s]["state"] == "ok", stages[s]
assert stages["test"]["summary"]["passed"] == 8, stages["test"]
assert stages["build"]["summary"]["built"] == 4, stages["build"]
assert "Wrote: " in log, "the rpmbuild log was not streamed into the console"
assert t["sections"]["triggers"] == "[cron:H 2 * * 1-5]", t["sections"]
'; then ok "Build Now run completes"; else bad "Build Now run"; fi

# The nightly timer build: nothing new arrived, every stage still ok.
if build 2 timer 0 && check 2 '
assert t["result"] == "SUCCESS", t
assert run["run"]["trigger"] == "timer" and run["run"]["started_by"] is None, run["run"]
assert stages["collect"]["summary"]["mails"] == 0, stages["collect"]
link = "<a href=\"" + url + "/ui/runs/" + t["run"] + "\">patchline run " + t["run"] + "</a>"
assert t["description"] == link + "<br>0 applied, 0 failed, 1 held", t["description"]
assert run["run"]["finished_at"], run["run"]
'; then ok "timer run completes"; else bad "timer run"; fi

# A stage that fails: the mailbox is gone, collect fails, the later
# stages are skipped, report still runs and the run is finished.
mv "$site/demo-work/list.mbox" "$site/demo-work/list.mbox.away"
if build 3 user 1 --param DRY_RUN=true && check 3 '
assert t["result"] == "FAILURE", t["result"]
assert [s["status"] for s in t["stages"]] == ["failed"] + ["skipped"] * 4, t["stages"]
assert "list.mbox" in t["stages"][0]["error"], t["stages"][0]
assert stages["collect"]["state"] == "failed", stages["collect"]
assert stages["report"]["state"] == "ok", stages["report"]
assert run["run"]["finished_at"] and run["run"]["state"] == "failed", run["run"]
assert run["run"]["dry_run"] is True, run["run"]
assert any(s["step"] == "archiveArtifacts" and s["files"] for s in t["steps"]), t["steps"]
assert t["description"].endswith("</a><br>0 applied, 0 failed, 1 held"), t["description"]
'; then ok "a failing stage fails the pipeline and report still runs"; else bad "failing stage"; fi
mv "$site/demo-work/list.mbox.away" "$site/demo-work/list.mbox"

# A series that cannot apply (made on a commit the list never saw): the
# build is UNSTABLE, its series case fails with the reason and links to the
# series' page, the description counts it as failed.
src="$site/demo-work/src/hello"
git -C "$src" checkout -q -b stale master
printf 'hello: a README rewritten on a branch the list never saw.\n' >"$src/README"
git -C "$src" -c user.name=Stale -c user.email=stale@example.org commit -q -am "README: rewrite (never sent)"
printf 'hello: the README, reworded again.\n' >"$src/README"
git -C "$src" -c user.name=Stale -c user.email=stale@example.org commit -q -am "README: reword"
git -C "$src" format-patch -q -1 --subject-prefix="master PATCH hello" --stdout >>"$site/demo-work/list.mbox"
if build 4 user 1 && check 4 '
assert t["result"] == "UNSTABLE", t["result"]
assert [s["status"] for s in t["stages"]] == ["ok", "unstable", "ok", "ok", "ok"], t["stages"]
junit = next(s for s in t["steps"] if s["step"] == "junit")
series = [c for c in junit["cases"] if c["classname"] == "series.hello.master" and c["status"] == "failed"]
assert len(series) == 1 and series[0]["name"] == "README: reword v1 (1 patch)", junit["cases"]
assert series[0]["message"] and re.match(r"^status page: /ui/series/\d+\n", series[0]["out"]), series
assert t["description"].endswith("</a><br>0 applied, 1 failed, 1 held"), t["description"]
'; then ok "a series that does not apply is a failed series case"; else bad "failing series"; fi

echo "jenkins: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
