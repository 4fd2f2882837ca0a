#!/usr/bin/env bash
# Shared-cache benchmark: gvbuild against its own nginx (WebDAV, the Bazel HTTP cache layout) on
# 127.0.0.1, in one run.
#
#   bash bench/remote.sh
#
# (a) The generated 2,000-step graph (bench/gen.py --layers 20 --width 100): a cold build that
#     uploads everything; then a fresh copy of the project restored from the warm LOCAL cache;
#     and a fresh copy restored from the warm REMOTE cache with an EMPTY local cache.
#     Target: remote restore <= 2x local restore.
# (b) A step whose output is 1 GiB of random bytes: a fresh copy with an empty local cache
#     restores it from the server (download, SHA-256 check, blake3, restore into the tree),
#     against `curl -o FILE` of the same blob from the same nginx. Target: >= 0.8x curl's rate.
#     Peak RSS of the build that uploads it and of the one that downloads it.
#
# Needs: nginx (/usr/sbin/nginx or on PATH), curl, python3, GNU time (/usr/bin/time; apt-get
# install time), bash >= 5, cargo (unless GVBUILD is given), ~4 GiB free under BENCH_DIR.
# Environment (all optional):
#   BENCH_DIR  parent of the scratch folder (default $TMPDIR or /tmp)
#   GVBUILD    a gvbuild binary (default: cargo build --release)
#   RUNS       runs of each figure, medians reported (default 5)
#   COLD_RUNS  cold builds of the graph, each into an empty server folder (default 3)
#   JOBS       -j for gvbuild (default 2)
#   BIG_MIB    size of the big output in MiB (default 1024); SKIP_BIG=1 skips part (b)
#
# The graph's runs delete nothing (each gets new folders; all go at exit): on this
# machine's ext4 (no journal), creating files right after deleting thousands makes the kernel
# skip over recently freed inodes, which costs more than the restore itself.
set -euo pipefail
RUNS=${RUNS:-5}
COLD_RUNS=${COLD_RUNS:-3}
JOBS=${JOBS:-2}
BIG_MIB=${BIG_MIB:-1024}
SKIP_BIG=${SKIP_BIG:-0}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$here/bench/common.sh"
log() { printf '[remote %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

NGINX=/usr/sbin/nginx
[[ -x $NGINX ]] || NGINX=$(command -v nginx) || die "nginx not found (apt-get install nginx)"
for t in curl python3; do command -v $t >/dev/null || die "$t not found"; done
[[ -x /usr/bin/time ]] || die "GNU time not found at /usr/bin/time (apt-get install time)"
(( BASH_VERSINFO[0] >= 5 )) || die "bash >= 5 needed"
REPO=$here
. "$here/bench/setup.sh"
gvbuild_binary
# gvbuild runs its steps unsandboxed here, as ninja does: this compares the engines. The sandbox's
# own cost is bench/sandbox.sh's. (An environment variable, which older binaries ignore.)
export GVBUILD_NO_SANDBOX=1
unset GVBUILD_CACHE_DIR GVBUILD_REMOTE_CACHE GVBUILD_REMOTE_READ_ONLY || true

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/gvremote.XXXXXX")
NGINX_PID=""
cleanup() {
  if [[ -n $NGINX_PID ]]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy, so that a concurrent `cargo build` cannot swap the binary mid-run.
cp "$GVBUILD" "$work/gvbuild"
gv=$work/gvbuild

# ---------------------------------------------------------------- nginx, as tests/remote/nginx.rs
ng=$work/nginx
mkdir -p "$ng/www" "$ng/tmp" "$ng/logs"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [[ $(id -u) -eq 0 ]] && user="user root;"  # as root, workers would run as nobody
cat >"$ng/nginx.conf" <<CONF
$user
daemon off;
master_process off;
pid $ng/nginx.pid;
error_log $ng/logs/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $ng/tmp/body;
  proxy_temp_path $ng/tmp/proxy;
  fastcgi_temp_path $ng/tmp/fastcgi;
  uwsgi_temp_path $ng/tmp/uwsgi;
  scgi_temp_path $ng/tmp/scgi;
  server {
    listen 127.0.0.1:$PORT;
    root $ng/www;
    location / {
      dav_methods PUT DELETE;
      create_full_put_path on;
      client_max_body_size 0;
    }
  }
}
CONF
"$NGINX" -c "$ng/nginx.conf" -p "$ng" </dev/null >/dev/null 2>&1 &
NGINX_PID=$!
for _ in $(seq 200); do (: >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
(: >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || die "nginx did not start: $(cat "$ng/logs/error.log")"
url=http://127.0.0.1:$PORT
log "nginx on $url, scratch in $work"

# summary FILE KEY: a field of the --json summary line
summary() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("{") and "\"summary\"" in l: print(json.loads(l).get(sys.argv[2]))' "$1" "$2"; }
# timed OUT CMD...: run CMD in the current folder, its --json output to OUT; prints wall ms.
timed() { local out=$1; shift; ms sh -c '"$@" >"$0" 2>"$0.err"' "$out" "$@"; }
# expect OUT KEY VALUE: the summary says so, or the run is not what it claims to measure
expect() { local got; got=$(summary "$1" "$2"); [[ $got == "$3" ]] || die "$1: $2=$got, expected $3 ($(tail -n 3 "$1.err"))"; }
fresh() { local d=$work/$1; mkdir -p "$d"; cp -a "$tmpl/." "$d"; echo "$d"; }

# Inodes freed before the script (a previous run's scratch) count as recently deleted for 5 s
# once written back: wait that out.
sync; sleep 6

# ---------------------------------------------------------------- (a) the 2,000-step graph
tmpl=$work/tmpl
python3 "$here/bench/gen.py" "$tmpl" --layers 20 --width 100 >/dev/null 2>&1
steps=$(grep -c '^  t_' "$tmpl/gevulot.yaml")
[[ $steps -eq 2000 ]] || die "gen.py made $steps steps, not 2000"
declare -a cold local_r remote_r
for i in $(seq 1 "$COLD_RUNS"); do
  d=$(fresh "cold$i")
  # Each cold build uploads into an empty folder of the server and an empty local cache.
  cold+=("$(cd "$d" && timed "$work/cold$i.out" "$gv" -j "$JOBS" --json --cache-dir "$work/cold$i.cache" --remote-cache "$url/g$i" all)")
  expect "$work/cold$i.out" ran 2000
done
warm_local=$work/cold$COLD_RUNS.cache
warm_url=$url/g$COLD_RUNS
for i in $(seq 1 "$RUNS"); do
  d=$(fresh "local$i")
  local_r+=("$(cd "$d" && timed "$work/local$i.out" "$gv" -j "$JOBS" --json --cache-dir "$warm_local" all)")
  expect "$work/local$i.out" restored 2000
  d=$(fresh "remote$i")
  remote_r+=("$(cd "$d" && timed "$work/remote$i.out" "$gv" -j "$JOBS" --json --cache-dir "$work/remote$i.cache" --remote-cache "$warm_url" all)")
  expect "$work/remote$i.out" restored_remote 2000
  log "graph run $i: local ${local_r[-1]} ms, remote ${remote_r[-1]} ms"
done
cm=$(median "${cold[@]}"); lm=$(median "${local_r[@]}"); rm_=$(median "${remote_r[@]}")

# ---------------------------------------------------------------- (b) one 1 GiB output
if [[ $SKIP_BIG != 1 ]]; then
  big_yaml() { printf 'targets:\n  big:\n    restore: %s\n    outputs: [big.bin]\n    run: head -c %dM /dev/urandom > big.bin\n' "$1" "$BIG_MIB"; }
  # rss_ms OUT CMD...: run CMD; prints "wall_ms peak_rss_kib"
  rss_ms() { local out=$1; shift; /usr/bin/time -f '%e %M' -o "$out.time" "$@" >"$out" 2>"$out.err"; awk '{printf "%.0f %d\n", $1*1000, $2}' "$out.time"; }
  mkdir -p "$work/big-up"; big_yaml copy >"$work/big-up/gevulot.yaml"
  read -r up_ms up_kib < <(cd "$work/big-up" && GVBUILD_TIMINGS=1 rss_ms "$work/big-up.out" "$gv" --json --cache-dir "$work/big-up.cache" --remote-cache "$url/big")
  expect "$work/big-up.out" ran 1
  up_phase=$(grep -o 'timing: uploads *[0-9.]*' "$work/big-up.out.err" | awk '{print $3}')
  sha=$(sha256sum "$work/big-up/big.bin" | cut -d' ' -f1)
  rm -rf "$work/big-up" "$work/big-up.cache"
  declare -a down down_kib link curl_f curl_null fetch fetch_h
  for i in $(seq 1 "$RUNS"); do
    for mode in copy hardlink; do
      d=$work/big-$mode$i; mkdir -p "$d"; big_yaml "$mode" >"$d/gevulot.yaml"
      read -r t kib < <(cd "$d" && GVBUILD_TIMINGS=1 rss_ms "$d.out" "$gv" --json --cache-dir "$d.cache" --remote-cache "$url/big")
      expect "$d.out" restored_remote 1
      # The step's `remote fetch` phase: lookup, download into the local cache, both hashes, check.
      f=$(grep -o 'remote fetch [0-9.]*' "$d.out.err" | awk '{printf "%.0f", $3}')
      [[ -n $f ]] || die "$d: no remote fetch phase in GVBUILD_TIMINGS"
      if [[ $mode == copy ]]; then fetch+=("$f"); else fetch_h+=("$f"); fi
      cmp -s <(head -c 64 "$d/big.bin") <(curl -s -r 0-63 "$url/big/cas/$sha") || die "$d/big.bin: wrong bytes"
      [[ $(stat -c %s "$d/big.bin") -eq $((BIG_MIB << 20)) ]] || die "$d/big.bin: wrong size"
      if [[ $mode == copy ]]; then down+=("$t"); down_kib+=("$kib"); else link+=("$t"); fi
      rm -rf "$d" "$d.cache"
    done
    curl_f+=("$(ms curl -sf -o "$work/curl.out" "$url/big/cas/$sha")")
    [[ $(stat -c %s "$work/curl.out") -eq $((BIG_MIB << 20)) ]] || die "curl got a short file"
    rm -f "$work/curl.out"
    curl_null+=("$(ms curl -sf -o /dev/null "$url/big/cas/$sha")")
    log "big output run $i: gvbuild copy ${down[-1]} ms, hardlink ${link[-1]} ms, curl -o FILE ${curl_f[-1]} ms, curl -o /dev/null ${curl_null[-1]} ms"
  done
  fm=$(median "${fetch[@]}"); fhm=$(median "${fetch_h[@]}")
  dm=$(median "${down[@]}"); hm=$(median "${link[@]}"); cf=$(median "${curl_f[@]}"); cn=$(median "${curl_null[@]}")
  dk=$(printf '%s\n' "${down_kib[@]}" | sort -n | tail -n 1)
fi

# ---------------------------------------------------------------- report
rate() { python3 -c "print(f'{$2/$1:.2f}')"; }  # rate A B: the rate of the run taking A, relative to B's
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); nginx $("$NGINX" -v 2>&1 | cut -d/ -f2); gvbuild $(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?'); $RUNS runs (cold: $COLD_RUNS), medians."
echo
echo "| figure | gvbuild ms | peer ms | ratio | target |"
echo "| --- | ---: | ---: | ---: | --- |"
echo "| cold build of 2,000 steps, \`-j$JOBS\`, uploading all to nginx | $cm | — | — | — |"
echo "| restore all 2,000 into a fresh copy, from the remote cache with an empty local cache (peer: from the warm local cache) | $rm_ | $lm | $(ratio "$rm_" "$lm")× | ≤ 2× |"
if [[ $SKIP_BIG != 1 ]]; then
  echo "| download a $BIG_MIB MiB output into the local cache, SHA-256 and blake3 verified (the step's \`remote fetch\` phase, in the \`restore: hardlink\` runs; peer: \`curl -o FILE\`) | $fhm | $cf | $(rate "$fhm" "$cf")× curl's rate | ≥ 0.8× |"
  echo "| the same phase in the \`restore: copy\` runs (right after a run that wrote 2 GiB) | $fm | $cf | $(rate "$fm" "$cf")× curl's rate | ≥ 0.8× |"
  echo "| the whole build restoring it, \`restore: copy\` (the bytes written a second time, into the tree) | $dm | $cf | $(rate "$dm" "$cf")× curl's rate | — |"
  echo "| the same, \`restore: hardlink\` (peer: \`curl -o FILE\`) | $hm | $cf | $(rate "$hm" "$cf")× curl's rate | ≥ 0.8× |"
  echo
  echo "Peak RSS: the build that uploads the $BIG_MIB MiB output $((up_kib / 1024)) MiB (whole build ${up_ms} ms, of which the upload ${up_phase} ms; the output's pages mapped by the blake3 mmap hash count here); the build that downloads and restores it $((dk / 1024)) MiB at most. \`curl -o /dev/null\` of the blob: $cn ms."
fi
echo
echo "Raw runs (ms): cold ${cold[*]} / local ${local_r[*]} / remote ${remote_r[*]}"
[[ $SKIP_BIG == 1 ]] || echo "Raw runs (ms): fetch (copy runs) ${fetch[*]} / fetch (hardlink runs) ${fetch_h[*]} / copy ${down[*]} / hardlink ${link[*]} / curl -o FILE ${curl_f[*]} / curl -o /dev/null ${curl_null[*]}"
