#!/usr/bin/env bash
# Benchmark of `patchline serve` (docs/performance.md): requests/s and
# latency of GET /runs/{id} and of stage polling, with a bounded load
# generator (worker/examples/bench_serve.rs: N keep-alive connections,
# fixed duration), first on an idle worker, then while a build stage keeps
# both cores busy (the demo spec's %build burns CPU for BURN seconds).
#   bash scripts/bench-serve.sh [--connections 4] [--seconds 5] [--burn 6]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
connections=4 seconds=5 burn=6
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections="$2"; shift 2;;
    --seconds) seconds="$2"; shift 2;;
    --burn) burn="$2"; shift 2;;
    *) echo "usage: $0 [--connections N] [--seconds S] [--burn S]" >&2; exit 2;;
  esac
done
cargo build --quiet --release --bin patchline --example bench_serve
bin="$root/target/release/patchline" bench="$root/target/release/examples/bench_serve"
site="$(mktemp -d /tmp/patchline-bench-serve.XXXXXX)"
worker=""
trap '[ -n "$worker" ] && kill "$worker" 2>/dev/null; rm -rf "$site"' EXIT
cp -r examples/demo "$site/demo"
PATCHLINE_DEMO_WORK="$site/demo-work" bash scripts/demo.sh --prepare-only >"$site/demo.log" 2>&1
# A build that keeps a core busy per target job for $burn seconds.
git clone -q "$site/demo-work/repos/hello.git" "$site/edit"
for branch in master stable-1.0; do
  git -C "$site/edit" checkout -q "$branch"
  sed -i "s/^%make_build/end=\$((\$(date +%s) + $burn)); while [ \$(date +%s) -lt \$end ]; do :; done\n%make_build/" "$site/edit/hello.spec"
  git -C "$site/edit" -c user.name=bench -c user.email=bench@example.org commit -qam "bench: busy build"
  git -C "$site/edit" push -q origin "$branch"
done
openssl rand -hex 24 >"$site/token"
"$bin" --config "$site/demo/patchline.toml" serve --bind 127.0.0.1:0 --token-file "$site/token" 2>"$site/worker.log" &
worker=$!
for _ in $(seq 100); do grep -q 'listening on' "$site/worker.log" && break; sleep 0.1; done
addr="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$site/worker.log" | head -1)"
api() { curl -fsS -H "Authorization: Bearer $(cat "$site/token")" "$@"; }
wait_stage() {
  until s=$(api "http://$addr/api/v1/runs/1/stages/$1" | jq -r .state) && [ "$s" != queued ] && [ "$s" != running ]; do sleep 0.2; done
  echo "$s"
}
api -X POST -H 'Content-Type: application/json' -d '{"trigger":"api","cause":"bench"}' "http://$addr/api/v1/runs" >/dev/null
for s in collect apply; do api -X POST "http://$addr/api/v1/runs/1/stages/$s" >/dev/null; wait_stage "$s" >/dev/null; done

load() { "$bench" --addr "$addr" --token-file "$site/token" --connections "$connections" --seconds "$seconds" "$@"; }
run_path=/api/v1/runs/1
poll_paths=(--path /api/v1/runs/1/stages/build --path "/api/v1/runs/1/stages/build/log?offset=0")
echo "idle   GET $run_path: $(load --path $run_path)"
echo "idle   stage polling: $(load "${poll_paths[@]}")"
api -X POST "http://$addr/api/v1/runs/1/stages/build" >/dev/null
sleep 0.5
echo "build  GET $run_path: $(load --path $run_path)"
echo "build  stage polling: $(load "${poll_paths[@]}")"
state=$(api "http://$addr/api/v1/runs/1/stages/build" | jq -c '{state, started_at, finished_at, built: .summary.built}')
echo "build stage: $state (still running at the end of the measurements when finished_at is null or later than the start + $((2 * seconds)) s)"
wait_stage build >/dev/null
