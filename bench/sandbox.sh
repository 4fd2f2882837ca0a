#!/usr/bin/env bash
# The sandbox's cost: the same builds sandboxed (the default) and with --no-sandbox, interleaved
# in one run, on the same binary.
#
#   bash bench/sandbox.sh
#
# (a) Cold build of the generated 2,000-step graph (bench/gen.py --layers 20 --width 100: each
#     step sees its dependencies' outputs, ~407 files on average, and a quarter of them their
#     inputs' whole folder). Each run builds a fresh copy of the project into a never-used cache.
# (b) One-leaf rebuild at 10,000 targets (gen.py's default 20 x 500): src/t_0_0.txt changes, and
#     every step downstream of it runs.
# (c) Per-step setup: 500 independent steps (gen.py --layers 1 --width 500, one input each) at
#     -j1, cold; (sandboxed - unsandboxed) / 500 is what the sandbox adds to a step's wall time.
#     Such a step sees a handful of paths, so its view is bound; (d) is the same with every view
#     lazy (GVBUILD_SANDBOX_VIEW=lazy), the fixed cost of a step that sees many.
# (e) The mechanism's floor (bench/sandbox-floor.c, where cc is on PATH and this runs as root):
#     the same one-command step plainly and in the least a per-step sandbox with an overlay can
#     be (its namespace, an overlay of a plain folder, TMPDIR bound, the output copied out, the
#     folders removed; no view), 500 of each, interleaved. What gvbuild adds beyond it is its view.
# Target: (a) and (b) at most 1.10x unsandboxed.
#
# Environment (all optional): GVBUILD (default: cargo build --release), RUNS (default 3), LEAF_RUNS
# (runs of (b), default 1), JOBS (default 2), BENCH_DIR (parent of
# the scratch folder; default $TMPDIR or /tmp). Writes bench/sandbox-results.md.
set -euo pipefail
RUNS=${RUNS:-3}
LEAF_RUNS=${LEAF_RUNS:-1}
JOBS=${JOBS:-2}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/common.sh"
log() { printf '[sandbox %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
. "$REPO/bench/setup.sh"
gvbuild_binary
unset GVBUILD_CACHE_DIR GVBUILD_REMOTE_CACHE || true
work_dir sandbox
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
cp "$GVBUILD" "$WORK/gvbuild"
gv=$WORK/gvbuild
GEN=(python3 "$REPO/bench/gen.py")

# build DIR CACHE [FLAGS...]: one build, its wall ms on stdout; dies unless it succeeds.
build() {
  local dir=$1 cache=$2
  shift 2
  ms "$gv" -C "$dir" -j "$JOBS" --cache-dir "$cache" "$@" all || die "build of $dir failed"
}
# flags MODE: the flags of a mode (sandboxed: none).
flags() { [[ $1 == off ]] && echo --no-sandbox || true; }

# ---------------------------------------------------------------- (a) cold, 2,000 steps
"${GEN[@]}" --layers 20 --width 100 "$WORK/g2k" >/dev/null
declare -A cold=()
for ((i = 1; i <= RUNS; i++)); do
  for mode in on off; do
    d=$WORK/cold-$mode-$i
    cp -r "$WORK/g2k" "$d"
    # shellcheck disable=SC2046
    t=$(build "$d" "$WORK/cache-cold-$mode-$i" $(flags $mode))
    cold[$mode]+="$t "
    log "cold 2,000, sandbox $mode, run $i: $t ms"
    rm -rf "$d" "$WORK/cache-cold-$mode-$i"
  done
done
cold_on=$(median ${cold[on]}); cold_off=$(median ${cold[off]})

# ---------------------------------------------------------------- (b) one leaf, 10,000 targets
"${GEN[@]}" "$WORK/g10k" >/dev/null
steps=$("${GEN[@]}" --downstream t_0_0)
build "$WORK/g10k" "$WORK/cache10k" --no-sandbox >/dev/null
declare -A leaf=()
for ((i = 1; i <= LEAF_RUNS; i++)); do
  for mode in on off; do
    printf 'change %s %s\n' "$mode" "$i" >>"$WORK/g10k/src/t_0_0.txt"
    # shellcheck disable=SC2046
    t=$(build "$WORK/g10k" "$WORK/cache10k" $(flags $mode))
    leaf[$mode]+="$t "
    log "one leaf at 10,000 ($steps steps), sandbox $mode, run $i: $t ms"
  done
done
leaf_on=$(median ${leaf[on]}); leaf_off=$(median ${leaf[off]})

# ---------------------------------------------------------------- (c) per-step setup
"${GEN[@]}" --layers 1 --width 500 "$WORK/flat" >/dev/null
declare -A flat=()
for ((i = 1; i <= RUNS; i++)); do
  for mode in on lazy off; do
    d=$WORK/flat-$mode-$i
    cp -r "$WORK/flat" "$d"
    view=bind
    [[ $mode == lazy ]] && view=lazy
    # shellcheck disable=SC2046
    t=$(JOBS=1 GVBUILD_SANDBOX_VIEW=$view build "$d" "$WORK/cache-flat-$mode-$i" $(flags $mode))
    flat[$mode]+="$t "
    rm -rf "$d" "$WORK/cache-flat-$mode-$i"
  done
done
flat_on=$(median ${flat[on]}); flat_lazy=$(median ${flat[lazy]}); flat_off=$(median ${flat[off]})
per_step=$(python3 -c "print(f'{($flat_on - $flat_off) / 500:.2f}')")
per_lazy=$(python3 -c "print(f'{($flat_lazy - $flat_off) / 500:.2f}')")

# ---------------------------------------------------------------- (e) the mechanism's floor
floor_row=""
if command -v cc >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && cc -O2 -o "$WORK/floor" "$REPO/bench/sandbox-floor.c"; then
  plain=() boxed=()
  for ((i = 1; i <= RUNS; i++)); do
    mkdir "$WORK/floor-$i"
    read -r a b < <("$WORK/floor" "$WORK/floor-$i" 500)
    plain+=("$a") boxed+=("$b")
    rm -rf "$WORK/floor-$i"
  done
  floor_plain=$(median "${plain[@]}"); floor_boxed=$(median "${boxed[@]}")
  floor_ms=$(python3 -c "print(f'{($floor_boxed - $floor_plain) / 1000:.2f}')")
  floor_share=$(python3 -c "print(f'{1 + ($floor_boxed - $floor_plain) / 1000 / ($flat_off / 500):.2f}')")
  floor_row="| the mechanism's floor (bench/sandbox-floor.c: namespace, overlay of a plain folder, no view), µs a step | $floor_boxed | $floor_plain | $(ratio "$floor_boxed" "$floor_plain")× | |"
  log "floor: plain ${plain[*]} us, sandboxed ${boxed[*]} us"
else
  log "no floor: needs cc and root"
fi

out=$REPO/bench/sandbox-results.md
{
  echo "# Sandbox cost ($(date -u +%Y-%m-%d), \`bash bench/sandbox.sh\`, RUNS=$RUNS, LEAF_RUNS=$LEAF_RUNS, -j$JOBS, $(nproc) cores)"
  echo
  echo "| figure | sandboxed ms | --no-sandbox ms | ratio | goal |"
  echo "| --- | ---: | ---: | ---: | --- |"
  echo "| cold build, 2,000-step graph | $cold_on | $cold_off | $(ratio "$cold_on" "$cold_off")× | ≤ 1.10× |"
  echo "| one-leaf rebuild at 10,000 targets ($steps steps run) | $leaf_on | $leaf_off | $(ratio "$leaf_on" "$leaf_off")× | ≤ 1.10× |"
  echo "| 500 independent one-input steps, -j1 (bound view) | $flat_on | $flat_off | $(ratio "$flat_on" "$flat_off")× | |"
  echo "| the same, every view lazy | $flat_lazy | $flat_off | $(ratio "$flat_lazy" "$flat_off")× | |"
  [[ -n $floor_row ]] && echo "$floor_row"
  echo
  echo "Sandbox setup per step (from rows 3 and 4): $per_step ms bound, $per_lazy ms lazy."
  if [[ -n $floor_row ]]; then
    echo "The mechanism's floor: $floor_ms ms a step, which would make a -j1 step of row 3 ${floor_share}× unsandboxed; the rest of gvbuild's setup is its view."
  fi
  echo
  echo "Runs (ms): cold on: ${cold[on]}; off: ${cold[off]}. Leaf on: ${leaf[on]}; off: ${leaf[off]}. Flat on: ${flat[on]}; lazy: ${flat[lazy]}; off: ${flat[off]}."
} >"$out"
cat "$out"
