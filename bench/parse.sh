#!/usr/bin/env bash
# Reading gevulot.yaml with no parse cache: `gvbuild list` of the generated 10,000-target file
# (bench/gen.py, 20 layers of 500), for one or more gvbuild binaries, interleaved run by run so
# that the machine's noise falls on all of them alike.
#
#   GVBUILDS="/path/to/old/gvbuild /path/to/new/gvbuild" bash bench/parse.sh
#
# Environment (all optional):
#   GVBUILDS   the binaries to compare (default: cargo build --release of this repository)
#   TARGETS    targets of the generated file (default 10000, as 20 layers)
#   RUNS       runs per binary (default 9); the median is reported, and every run's time
#   BENCH_DIR  parent folder of the scratch work dir (default $TMPDIR or /tmp)
#
# Each run removes the project's .gvbuild/ first, so the YAML is read and validated every time
# (a later `gvbuild list` would take the graph from the parse cache). Wall time from bash's
# clock. Every run's output is checked to list every target.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "parse.sh: $*" >&2; }
die() { log "$*"; exit 1; }
. "$REPO/bench/setup.sh"

TARGETS=${TARGETS:-10000}
RUNS=${RUNS:-9}
if [[ -z ${GVBUILDS:-} ]]; then
    gvbuild_binary
    GVBUILDS=$GVBUILD
fi
read -r -a bins <<<"$GVBUILDS"
for b in "${bins[@]}"; do [[ -x $b ]] || die "no gvbuild binary at $b"; done

work_dir parse
trap 'rm -rf "$WORK"' EXIT
python3 "$REPO/bench/gen.py" "$WORK/p" --layers 20 --width $((TARGETS / 20)) >/dev/null 2>&1
log "$(wc -c <"$WORK/p/gevulot.yaml") bytes, $TARGETS targets, $RUNS runs per binary"

declare -A times
for ((r = 0; r < RUNS; r++)); do
    for b in "${bins[@]}"; do
        rm -rf "$WORK/p/.gvbuild"
        start=$(date +%s%N)
        n=$(cd "$WORK/p" && "$b" list | wc -l)
        end=$(date +%s%N)
        ((n >= TARGETS)) || die "$b listed $n lines, fewer than $TARGETS targets"
        times[$b]+="$(((end - start) / 1000000)) "
    done
done
for b in "${bins[@]}"; do
    read -r -a t <<<"${times[$b]}"
    median=$(printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "- $b: gvbuild list, $TARGETS targets, no parse cache: median $median ms (runs: ${t[*]})"
done
