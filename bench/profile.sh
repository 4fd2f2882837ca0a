#!/usr/bin/env bash
# Callgrind profile of gvbuild's no-op build of the 10,000-target benchmark graph (bench/gen.py,
# 20 x 500, every 4th step with a depfile): instruction counts, which do not depend on how busy
# the machine is.
#
#   LABEL=before bash bench/profile.sh      # writes bench/profile-noop-10k-before.txt
#   LABEL=after  bash bench/profile.sh      # the same, after a change
#
# Environment (all optional):
#   BENCH_DIR   parent folder for the scratch work dir (default: $TMPDIR or /tmp)
#   GVBUILD     gvbuild binary (default: cargo build --release; the release profile keeps
#               line tables, debug = 1, so callgrind names the functions)
#   LABEL       suffix of the output file (default: the repository's short HEAD)
#   LAYERS WIDTH JOBS   graph shape and -j (default 20 500 2)
#   TOP         entries of the inclusive listing kept (default 60)
#   KEEP_WORK=1 keep the scratch work dir (callgrind.out in it, for callgrind_annotate or kcachegrind)
#
# The project is built cold, then once more (an untimed no-op, so that the stat cache and state
# are as a no-op leaves them); the profiled run is the third, checked to run nothing. The output
# file starts with the total instruction count and the inclusive share of each phase of a no-op
# (PHASES below: a phase is the function it names, callees included), then an
# inclusive listing (bench/callgrind_inclusive.py) of the TOP largest functions, and the largest
# self counts.
set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/.." && pwd)
LAYERS=${LAYERS:-20}
WIDTH=${WIDTH:-500}
JOBS=${JOBS:-2}
TOP=${TOP:-60}
LABEL=${LABEL:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo uncommitted)}
# gvbuild runs its steps unsandboxed here, as ninja does: this compares the engines. The sandbox's
# own cost is bench/sandbox.sh's. (An environment variable, which older binaries ignore.)
export GVBUILD_NO_SANDBOX=1
unset GVBUILD_CACHE_DIR || true

log() { printf '[profile %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind needed (apt-get install valgrind)"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate needed (comes with valgrind)"

# Phase label | function names (grep -E, matched against the whole name). A phase's cost is the
# inclusive count of the function it names, over all threads (rayon's workers run most fresh
# checks); where a pattern matches several functions, their counts are added ("+" labels) or the
# largest is taken. A renamed function, or one that LTO inlined into its caller (the release
# profile has used fat LTO since commit 4561a48), shows as "(not in the profile)": the lines
# after it name the parts that are still functions.
PHASES=(
    "whole run, main thread (gvbuild::main)|gvbuild::main"
    "load the graph (parse cache: no YAML parsed)|gvbuild::graph::Graph::load_with"
    "load the state (.gvbuild/state)|gvbuild::fingerprint::state::State::load"
    "load the stat cache|gvbuild::fingerprint::hash::StatCache::load"
    "fresh checks, all steps (the walk, or runner::check_fresh)|gvbuild::exec::FreshWalk::visit|gvbuild::exec::runner::check_fresh"
    "  keying the step (runner::fingerprint)|gvbuild::exec::runner::fingerprint"
    "  checking the key, outputs (runner::fresh)|gvbuild::exec::runner::fresh"
    "  resolve declared inputs|gvbuild::fingerprint::inputs::resolve_noting_empty_globs"
    "+  stat-cache lookups (file ids)|gvbuild::fingerprint::hash::StatCache::file_id_with_meta|gvbuild::fingerprint::hash::StatCache::file_id_in"
    "  stats relative to the project folder|gvbuild::fingerprint::hash::StatCache::meta"
    "  state and stat-cache index lookups (Named::position)|gvbuild::fingerprint::named::Named<V>::position"
    "  the first key (KeyParts::key)|gvbuild::fingerprint::KeyParts::key"
    "  discovered inputs (depfile names, search folders)|gvbuild::fingerprint::discovered::identities"
    "  the full key (with discovered inputs)|gvbuild::fingerprint::full_key|gvbuild::exec::runner::full_for"
    "  output trees: stat of each output|gvbuild::fingerprint::outputs::OutputTree::collect"
    "  output trees: digest|gvbuild::fingerprint::outputs::OutputTree::digest"
    "+report each step (--json event lines)|gvbuild::exec::report::Reporter::step|gvbuild::exec::report::fresh_line|gvbuild::exec::report::Reporter::push_line"
    "  of which serde_json's Value -> text|<serde_json::value::Value as core::fmt::Display>::fmt"
    "save the stat cache and state|gvbuild::fingerprint::hash::StatCache::save|gvbuild::fingerprint::state::State::save"
    "drop the build context at exit (exec::Ctx)|core::ptr::drop_in_place<gvbuild::exec::Ctx>"
    "+malloc/realloc/free, all callers|malloc|free|realloc|calloc"
    "HashMap hashing (SipHash), all callers|core::hash::BuildHasher::hash_one"
    "blake3::hash, all callers|blake3::hash"
)

. "$BENCH_SRC/setup.sh"
gvbuild_binary

work_dir profile
cleanup() { if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
cp "$GVBUILD" "$WORK/gvbuild"
P=$WORK/proj
GV=("$WORK/gvbuild" -C "$P" -j "$JOBS" --json --cache-dir "$WORK/cache" all)

ran_of() { grep '"event":"summary"' "$1" | tail -n 1 | sed 's/.*"ran":\([0-9]*\).*/\1/'; }

python3 "$BENCH_SRC/gen.py" "$P" --layers "$LAYERS" --width "$WIDTH" 2>/dev/null
log "cold build of $((LAYERS * WIDTH)) targets"
"${GV[@]}" >"$WORK/cold.log" 2>&1 || die "cold build failed (see $WORK/cold.log)"
"${GV[@]}" >"$WORK/warm.log" 2>&1 || die "no-op build failed"
log "callgrind on the no-op"
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "${GV[@]}" \
    >"$WORK/noop.log" 2>"$WORK/valgrind.log" || die "profiled no-op failed (see $WORK/valgrind.log)"
ran=$(ran_of "$WORK/noop.log")
[[ $ran == 0 ]] || die "the profiled no-op ran ${ran:-?} steps (see $WORK/noop.log)"

# Inclusive counts per whole function (bench/callgrind_inclusive.py: callgrind_annotate
# --inclusive=yes lists a function once per source file its inlined code came from, none of them
# the whole; its totals line is kept as a cross-check).
python3 "$BENCH_SRC/callgrind_inclusive.py" "$WORK/callgrind.out" >"$WORK/funcs.tsv"
total=$(awk -F'\t' '$1 == "TOTAL" {print $2; exit}' "$WORK/funcs.tsv")
[[ -n $total ]] || die "no total in $WORK/funcs.tsv"
callgrind_annotate --inclusive=yes "$WORK/callgrind.out" >"$WORK/annotate.txt" 2>/dev/null || true
annotated=$(awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1; exit}' "$WORK/annotate.txt")
[[ $annotated == "$total" ]] || die "totals differ: callgrind_annotate ${annotated:-none}, callgrind_inclusive.py $total"
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
pct() { awk -v a="$1" -v t="$total" 'BEGIN{printf "%.1f", 100*a/t}'; }

rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
subject=$(git -C "$REPO" log -1 --format=%s 2>/dev/null | cut -c1-72 || echo "?")
out=$BENCH_SRC/profile-noop-10k-$LABEL.txt
{
    echo "Callgrind profile of a gvbuild no-op build: $((LAYERS * WIDTH)) targets ($LAYERS x $WIDTH, every 4th step"
    echo "with a depfile), -j$JOBS --json, release binary, all steps fresh. Made by"
    echo "\`LABEL=$LABEL bash bench/profile.sh\` on $(date -u '+%Y-%m-%d'), commit $rev"
    echo "(\"$subject...\"), $(valgrind --version)."
    echo
    echo "Total: $(commas "$total") instructions (Ir), all threads."
    echo
    echo "Inclusive share per phase (a phase is a function, callees included, over all threads; the"
    echo "indented ones run inside the fresh checks):"
    echo
    for p in "${PHASES[@]}"; do
        label=${p%%|*}; pat=${p#*|}
        how=max
        if [[ $label == +* ]]; then how=sum; label=${label#+}; fi
        c=$(awk -F'\t' -v how="$how" -v pat="^($pat)\$" 'NR > 1 && $3 ~ pat {
                if (how == "sum") c += $1; else if ($1 > c) c = $1 } END { if (c != "") print c }' "$WORK/funcs.tsv")
        if [[ -z $c ]]; then printf '  %-52s %s\n' "$label" "(not in the profile)"; continue; fi
        printf '  %-52s %13s %6s%%\n' "$label" "$(commas "$c")" "$(pct "$c")"
    done
    echo
    echo "The top $TOP functions by inclusive count (runtime frames - thread start, rayon's plumbing,"
    echo "std::rt, the loader - and recursive ones counted over 100% left out), with their own (self) share:"
    echo
    printf '%15s %7s %7s  %s\n' "inclusive Ir" "incl" "self" "function"
    awk -F'\t' -v t="$total" 'NR > 1 && $1 <= t' "$WORK/funcs.tsv" \
        | grep -vE $'\t(rayon|<rayon|std::|<std::sys::|core::ops::function::|0x0+1ab70$|\\(below main\\)$|main$|__libc_start_main|start_thread$|clone3?$|_dl_|dl_main$)' \
        | awk -v n="$TOP" 'NR <= n' \
        | while IFS=$'\t' read -r inc own name; do
            printf '%15s %6s%% %6s%%  %s\n' "$(commas "$inc")" "$(pct "$inc")" "$(pct "$own")" "${name:0:140}"
        done
    echo
    echo "The top 25 functions by their own (self) count:"
    echo
    printf '%15s %7s  %s\n' "self Ir" "self" "function"
    awk -F'\t' 'NR > 1' "$WORK/funcs.tsv" | sort -t$'\t' -k2,2nr | awk 'NR <= 25' \
        | while IFS=$'\t' read -r inc own name; do
            printf '%15s %6s%%  %s\n' "$(commas "$own")" "$(pct "$own")" "${name:0:140}"
        done
} >"$out"
cat "$out"
log "written to $out"
