#!/usr/bin/env bash
# Load on a small shared cache (issue 20): four clones of the 300-step graph
# (bench/gen.py --layers 10 --width 30) built at once, -j2 each, against one cache-only BuildGrid
# (examples/remote-cache/buildgrid.yml with `thread-pool-size: 5`, the smallest BuildGrid takes),
# then a fifth clone with an empty local cache restoring everything from it. The peer: one clone
# alone against a fresh server of the same size. Each build is checked: exit 0, no warning,
# outputs equal to a local build's, and the last clone runs no step.
#
#   bash bench/load.sh
#
# Needs: python3, a venv with BuildGrid (BGD, default .ci/bgvenv/bin/bgd; .ci/bg9venv/bin/bgd
# for 0.9), cargo (unless GVBUILD is given). Prints the wall time of every build and how often
# the server pushed back (gvbuild's own count, from its end-of-build line).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$here
. "$here/bench/common.sh"
log() { printf '[load %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
. "$here/bench/setup.sh"
gvbuild_binary
BGD=${BGD:-$here/.ci/bgvenv/bin/bgd}
[[ -x $BGD ]] || die "no BuildGrid at $BGD (.ci/run makes .ci/bgvenv)"
unset GVBUILD_CACHE_DIR GVBUILD_REMOTE_CACHE GVBUILD_REMOTE_READ_ONLY || true

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/gvload.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cp "$GVBUILD" "$work/gvbuild"
gv=$work/gvbuild

# server NAME: a cache-only BuildGrid with a pool of 5 in $work/NAME; sets URL.
server() {
  local dir=$work/$1 port
  mkdir -p "$dir/cas"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  { cat "$here/examples/remote-cache/buildgrid.yml"; echo "thread-pool-size: 5"; } > "$dir/bgd.yml"
  BGD_PORT=$port BGD_INSTANCE=main BGD_CAS=$dir/cas "$BGD" server start "$dir/bgd.yml" > "$dir/bgd.log" 2>&1 &
  pids+=($!)
  timeout 120 bash -c "until echo > /dev/tcp/127.0.0.1/$port; do sleep 0.2; done" 2>/dev/null \
    || die "BuildGrid did not start: $(tail -5 "$dir/bgd.log")"
  URL=grpc://127.0.0.1:$port/main
}

python3 "$here/bench/gen.py" --layers 10 --width 30 "$work/ref" 2>/dev/null
"$gv" -C "$work/ref" --cache-dir "$work/ref-cache" -j2 -q
want=$(cd "$work/ref/out" && sha256sum -- * | sha256sum)

# clone NAME: a copy of the generated project.
clone() { mkdir -p "$work/$1"; cp -r "$work/ref/src" "$work/ref/gevulot.yaml" "$work/$1/"; mkdir -p "$work/$1/out"; }
# build NAME: build clone NAME against $URL with its own cache; prints "ms pushbacks ran".
build() {
  local t0 t1 err
  t0=$(date +%s%N)
  "$gv" -C "$work/$1" --cache-dir "$work/$1-cache" -j2 --json --remote-cache "$URL" > "$work/$1.json" 2> "$work/$1.err" \
    || die "$1 failed: $(cat "$work/$1.err")"
  t1=$(date +%s%N)
  err=$(cat "$work/$1.err")
  grep -q '^warning' <<< "$err" && die "$1 warned: $err"
  [[ $(cd "$work/$1/out" && sha256sum -- * | sha256sum) == "$want" ]] || die "$1's outputs differ"
  echo "$(( (t1 - t0) / 1000000 )) $(grep -o 'asked [0-9]* time' <<< "$err" | grep -o '[0-9]*' || echo 0)" \
    "$(grep -c '"outcome":"ran"' "$work/$1.json" || true)"
}

log "BuildGrid: $("$(dirname "$BGD")/python" -c 'import importlib.metadata as m; print(m.version("buildgrid"))')"
server alone
clone alone
read -r alone_ms alone_pb _ < <(build alone)
echo "one clone alone: ${alone_ms} ms, ${alone_pb} pushback(s)"

server shared
for i in 1 2 3 4; do clone "c$i"; done
builds=()
for i in 1 2 3 4; do build "c$i" > "$work/c$i.fig" & builds+=($!); done
for b in "${builds[@]}"; do wait "$b" || die "a clone's build failed"; done
for i in 1 2 3 4; do
  read -r m p _ < "$work/c$i.fig" || die "clone c$i gave no figure"
  echo "clone $i of 4 at once: ${m} ms, ${p} pushback(s)"
done
clone later
read -r later_ms later_pb later_ran < <(build later)
[[ $later_ran == 0 ]] || die "the later clone ran $later_ran step(s)"
echo "a later clone, empty local cache, restoring all 300 steps: ${later_ms} ms, ${later_pb} pushback(s)"
