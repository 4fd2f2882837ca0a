#!/usr/bin/env bash
# gvbuild's no-op build across graph sizes, and the time to the first step of a cold build,
# against ninja on the same generated graphs (bench/gen.py), the two tools interleaved run by run.
#
#   bash bench/noop.sh                              # 1,000 and 10,000 targets (~3 minutes)
#   SIZES="1000 10000 100000" bash bench/noop.sh    # also 100,000 (~15 more minutes: two cold builds)
#
# Environment (all optional):
#   BENCH_DIR     parent folder for the scratch work dir (default: $TMPDIR or /tmp); not inside
#                 the repository
#   GVBUILD       path of a gvbuild binary to use (default: cargo build --release)
#   SIZES         target counts of the no-op figures (default "1000 10000"); each graph is LAYERS
#                 layers of SIZE/LAYERS targets
#   LAYERS        layers of every graph (default 20)
#   JOBS          parallelism for both tools (default 2)
#   NOOP_RUNS     no-op runs per size and tool (default 10; three times as many at 1,000 targets
#                 or fewer)
#   TTFS_SIZE     targets of the time-to-first-step graph (default 10000; 0 skips that figure)
#   TTFS_RUNS     cold starts per tool for that figure (default 7)
#   KEEP_WORK=1   keep the scratch work dir
#   TARGET_NOOP TARGET_RSS TARGET_TTFS   max ratios against ninja (1.0 2.0 1.0)
#
# Each size: both tools build the graph cold (timed, once: a figure only for how long it takes),
# one untimed no-op each, then NOOP_RUNS no-ops each, alternating, each run right after the other
# tool's (the runs' results are checked afterwards); wall time from bash's clock,
# CPU time and peak RSS from /usr/bin/time. Every gvbuild run's --json summary and every ninja
# run's output are checked (a no-op must run nothing).
#
# Time to the first step: the graph's every command starts with a guard that has the first
# command to start write the time (gen.py --stamp). Each run starts from a fresh copy of the
# generated project (no .gvbuild/, so no parse cache; no .ninja_log or .ninja_deps; no outputs)
# and, for gvbuild, a new empty cache folder. The tool is started in a process group of its own
# right after its start time is taken; once the stamp appears the group is killed (the rest of
# the build would not change the figure). Figure: stamp - start.
#
# Prints Markdown tables and writes them to bench/noop-results.md; the per-size medians go to
# bench/noop.tsv, which bench/plot.py draws as bench/noop.svg.
set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/.." && pwd)

SIZES=${SIZES:-1000 10000}
LAYERS=${LAYERS:-20}
JOBS=${JOBS:-2}
NOOP_RUNS=${NOOP_RUNS:-10}
TTFS_SIZE=${TTFS_SIZE:-10000}
TTFS_RUNS=${TTFS_RUNS:-7}
TARGET_NOOP=${TARGET_NOOP:-1.0}
TARGET_RSS=${TARGET_RSS:-2.0}
TARGET_TTFS=${TARGET_TTFS:-1.0}
# gvbuild runs its steps unsandboxed here, as ninja does: this compares the engines. The sandbox's
# own cost is bench/sandbox.sh's. (An environment variable, which older binaries ignore.)
export GVBUILD_NO_SANDBOX=1
unset GVBUILD_CACHE_DIR || true

log() { printf '[noop %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 needed"
command -v ninja >/dev/null || die "ninja needed (apt-get install ninja-build, or run bench/run.sh once)"
[[ -x /usr/bin/time ]] || die "GNU time needed at /usr/bin/time (apt-get install time)"
(( BASH_VERSINFO[0] >= 5 )) || die "bash >= 5 needed (EPOCHREALTIME)"
for s in $SIZES $TTFS_SIZE; do
    [[ $s == 0 ]] && continue
    (( s % LAYERS == 0 )) || die "size $s is not a multiple of LAYERS=$LAYERS"
done

. "$BENCH_SRC/setup.sh"
gvbuild_binary

work_dir noop
TTFS_PID=""
cleanup() {
    if [[ -n $TTFS_PID ]]; then kill -KILL -- "-$TTFS_PID" 2>/dev/null || true; fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy, so that a concurrent `cargo build` cannot swap the binary mid-run.
cp "$GVBUILD" "$WORK/gvbuild"
GVBUILD_SRC=$GVBUILD
GVBUILD=$WORK/gvbuild
LOGS=$WORK/logs; mkdir -p "$LOGS"
NOTES=$WORK/notes; : >"$NOTES"
note() { log "NOTE: $*"; printf '%s\n' "$*" >>"$NOTES"; }

# ---------------------------------------------------------------- helpers
# measured OUT CMD...: run CMD under /usr/bin/time (stdout+stderr to OUT); sets LAST_US (wall µs,
# bash's clock), LAST_CPU_MS (user+sys, children included) and LAST_RSS_KIB (peak RSS).
LAST_US=0 LAST_CPU_MS="" LAST_RSS_KIB=""
measured() {
    local out=$1; shift
    local t0 t1 rc=0
    t0=${EPOCHREALTIME/[.,]/}
    /usr/bin/time -f '%U %S %M' -o "$out.time" "$@" >"$out" 2>&1 || rc=$?
    t1=${EPOCHREALTIME/[.,]/}
    LAST_US=$((t1 - t0))
    read -r LAST_CPU_MS LAST_RSS_KIB < <(tail -n 1 "$out.time" | awk 'NF==3{printf "%.0f %d\n", ($1+$2)*1000, $3}') || true
    if [[ $rc -ne 0 ]]; then
        log "command failed (exit $rc): $*"
        tail -n 20 "$out" >&2 || true
        return "$rc"
    fi
}
GV() { local out=$1; shift; measured "$out" "$GVBUILD" -C "$1" -j "$JOBS" --json --cache-dir "$2" all; }
NJ() { local out=$1; shift; measured "$out" ninja -C "$1" -j "$JOBS" all; }

# median of numbers -> the median, with DIV dividing it (µs -> ms: 1000) and DEC decimals
median_of() {
    local div=$1 dec=$2; shift 2
    printf '%s\n' "$@" | sort -n | awk -v d="$div" -v p="$dec" '{a[NR]=$1} END{ if(NR==0){print "";exit}
        m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.*f\n", p, m/d }'
}
# list_div DIV DEC N...: each N divided by DIV, with DEC decimals, space-separated
list_div() { local div=$1 dec=$2 s="" v; shift 2; for v in "$@"; do s+="$(awk -v x="$v" -v d="$div" -v p="$dec" 'BEGIN{printf "%.*f", p, x/d}') "; done; echo "${s% }"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if(a==""||b==""||b+0==0){print ""} else printf "%.2f\n", a/b }'; }
verdict() { awk -v v="$1" -v l="$2" 'BEGIN{ if(v==""){print "n/a"} else if(v+0<=l+0) print "met"; else print "not met" }'; }
thousands() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

# gv_ran FILE -> "ran failed" from the summary line of --json output ("none none" without one)
gv_ran() {
    python3 - "$1" <<'EOF'
import json, sys
s = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if o.get("event") == "summary":
            s = o
print("none none" if s is None else f"{s.get('ran', 'none')} {s.get('failed', 'none')}")
EOF
}
check_gv() { # FILE WHAT EXPECT_RAN
    local ran failed
    read -r ran failed < <(gv_ran "$1")
    [[ $ran == "$3" && $failed == 0 ]] || note "gvbuild $2: ran=$ran failed=$failed, expected ran=$3 (see $1)"
}
check_nj() { # FILE WHAT EXPECT_RAN
    local n
    if grep -q 'ninja: no work to do' "$1"; then n=0
    else n=$(grep -o '^\[[0-9]*/[0-9]*\]' "$1" | tail -n 1 | sed 's/^\[\([0-9]*\)\/.*/\1/' | grep . || echo "?"); fi
    [[ $n == "$3" ]] || note "ninja $2: ran $n steps, expected $3 (see $1)"
}

# ---------------------------------------------------------------- no-op across sizes
TSV=$WORK/noop.tsv
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
printf 'targets\tlayers\twidth\tgv_noop_ms\tnj_noop_ms\tgv_rss_kib\tnj_rss_kib\tgv_cold_ms\tnj_cold_ms\tcommit\n' >"$TSV"
: >"$WORK/raw.md"

noop_size() {
    local n=$1 width=$(($1 / LAYERS)) d=$WORK/n$1 i
    local gvs=() njs=() gr=() nr=() gc=() nc=() cold_gv cold_nj
    log "== $n targets ($LAYERS x $width)"
    python3 "$BENCH_SRC/gen.py" "$d/gv" --layers "$LAYERS" --width "$width" 2>/dev/null
    python3 "$BENCH_SRC/gen.py" "$d/nj" --layers "$LAYERS" --width "$width" 2>/dev/null
    sync
    GV "$LOGS/cold-gv-$n" "$d/gv" "$d/cache"
    cold_gv=$LAST_US
    check_gv "$LOGS/cold-gv-$n" "cold build of $n" "$n"
    log "cold gvbuild: $((LAST_US / 1000)) ms, peak RSS $((LAST_RSS_KIB / 1024)) MiB"
    NJ "$LOGS/cold-nj-$n" "$d/nj"
    cold_nj=$LAST_US
    check_nj "$LOGS/cold-nj-$n" "cold build of $n" "$n"
    log "cold ninja:   $((LAST_US / 1000)) ms, peak RSS $((LAST_RSS_KIB / 1024)) MiB"
    if ! diff -rq -x "*.d" "$d/gv/out" "$d/nj/out" >"$LOGS/diff-$n" 2>&1; then
        note "$n targets: outputs of gvbuild and ninja differ: $(head -n 3 "$LOGS/diff-$n" | tr '\n' ' ')"
    fi
    GV "$LOGS/warm-gv-$n" "$d/gv" "$d/cache"
    check_gv "$LOGS/warm-gv-$n" "no-op (warm-up) of $n" 0
    NJ "$LOGS/warm-nj-$n" "$d/nj"
    check_nj "$LOGS/warm-nj-$n" "no-op (warm-up) of $n" 0
    # Small graphs take a few milliseconds a run, where this machine's noise is as large:
    # three times the runs. The runs are checked after the loop: a check between runs (python3)
    # would run right before the next tool's run and disturb its caches.
    local runs=$NOOP_RUNS
    (( n > 1000 )) || runs=$((NOOP_RUNS * 3))
    for ((i = 1; i <= runs; i++)); do
        GV "$LOGS/noop-gv-$n-$i" "$d/gv" "$d/cache"
        gvs+=("$LAST_US"); gr+=("$LAST_RSS_KIB"); gc+=("$LAST_CPU_MS")
        NJ "$LOGS/noop-nj-$n-$i" "$d/nj"
        njs+=("$LAST_US"); nr+=("$LAST_RSS_KIB"); nc+=("$LAST_CPU_MS")
    done
    for ((i = 1; i <= runs; i++)); do
        check_gv "$LOGS/noop-gv-$n-$i" "no-op run $i of $n" 0
        check_nj "$LOGS/noop-nj-$n-$i" "no-op run $i of $n" 0
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$LAYERS" "$width" \
        "$(median_of 1000 1 "${gvs[@]}")" "$(median_of 1000 1 "${njs[@]}")" \
        "$(median_of 1 0 "${gr[@]}")" "$(median_of 1 0 "${nr[@]}")" \
        "$(median_of 1000 0 "$cold_gv")" "$(median_of 1000 0 "$cold_nj")" "$COMMIT" >>"$TSV"
    log "no-op medians: gvbuild $(median_of 1000 1 "${gvs[@]}") ms $(median_of 1024 1 "${gr[@]}") MiB," \
        "ninja $(median_of 1000 1 "${njs[@]}") ms $(median_of 1024 1 "${nr[@]}") MiB"
    {
        echo "- $n targets, no-op wall ms: gvbuild $(list_div 1000 1 "${gvs[@]}"); ninja $(list_div 1000 1 "${njs[@]}")"
        echo "- $n targets, no-op CPU ms (user+sys): gvbuild ${gc[*]}; ninja ${nc[*]}"
        echo "- $n targets, no-op peak RSS MiB: gvbuild $(list_div 1024 1 "${gr[@]}"); ninja $(list_div 1024 1 "${nr[@]}")"
    } >>"$WORK/raw.md"
    rm -rf "$d"
}

# ---------------------------------------------------------------- time to the first step
# ttfs_run TOOL DIR CACHE: TTFS_US = stamp - start in µs; kills the build once the stamp is there
TTFS_US=""
ttfs_run() {
    local tool=$1 dir=$2 cache=$3 start stamp="" t
    set -m
    if [[ $tool == gv ]]; then
        ( echo "${EPOCHREALTIME/[.,]/}" >"$dir.start"
          exec "$GVBUILD" -C "$dir" -j "$JOBS" --json --cache-dir "$cache" all ) >"$dir.log" 2>&1 &
    else
        ( echo "${EPOCHREALTIME/[.,]/}" >"$dir.start"
          exec ninja -C "$dir" -j "$JOBS" all ) >"$dir.log" 2>&1 &
    fi
    TTFS_PID=$!
    set +m
    for ((t = 0; t < 60000; t++)); do
        if [[ -s $dir/ttfs.stamp ]]; then stamp=$(<"$dir/ttfs.stamp"); [[ -n $stamp ]] && break; fi
        kill -0 "$TTFS_PID" 2>/dev/null || break
        sleep 0.005
    done
    kill -TERM -- "-$TTFS_PID" 2>/dev/null || true
    wait "$TTFS_PID" 2>/dev/null || true
    TTFS_PID=""
    if [[ -z $stamp ]]; then
        log "$tool: no stamp; the log ends:"; tail -n 20 "$dir.log" >&2 || true
        return 1
    fi
    start=$(<"$dir.start")
    TTFS_US=$((stamp / 1000 - start))
}

TTFS_ROW=""
ttfs() {
    local n=$TTFS_SIZE width=$((TTFS_SIZE / LAYERS)) src=$WORK/ttfs-src i gvs=() njs=()
    log "== time to the first step, $n targets ($LAYERS x $width), $TTFS_RUNS cold starts each"
    python3 "$BENCH_SRC/gen.py" "$src" --layers "$LAYERS" --width "$width" --stamp ttfs.stamp 2>/dev/null
    for ((i = 1; i <= TTFS_RUNS; i++)); do
        rm -rf "$WORK/ttfs-gv" "$WORK/ttfs-nj" "$WORK/ttfs-cache"
        cp -a "$src" "$WORK/ttfs-gv"
        cp -a "$src" "$WORK/ttfs-nj"
        mkdir "$WORK/ttfs-cache"
        sync
        ttfs_run gv "$WORK/ttfs-gv" "$WORK/ttfs-cache"
        gvs+=("$TTFS_US")
        ttfs_run nj "$WORK/ttfs-nj" -
        njs+=("$TTFS_US")
        log "run $i: gvbuild $((gvs[-1] / 1000)) ms, ninja $((njs[-1] / 1000)) ms"
    done
    rm -rf "$WORK/ttfs-gv" "$WORK/ttfs-nj" "$WORK/ttfs-cache" "$src"
    TTFS_GV=$(median_of 1000 1 "${gvs[@]}")
    TTFS_NJ=$(median_of 1000 1 "${njs[@]}")
    echo "- time to the first step, $n targets, cold, ms: gvbuild $(list_div 1000 1 "${gvs[@]}"); ninja $(list_div 1000 1 "${njs[@]}")" >>"$WORK/raw.md"
    local r; r=$(ratio "$TTFS_GV" "$TTFS_NJ")
    TTFS_ROW="| time to the first step of a cold build, $(thousands "$n") targets, \`-j$JOBS\` | $TTFS_GV | $TTFS_NJ | ${r}× | ≤ ${TARGET_TTFS}× ($(verdict "$r" "$TARGET_TTFS")) |"
}

# ---------------------------------------------------------------- main
T_START=${EPOCHREALTIME/[.,]/}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
log "work dir $WORK; gvbuild $GVBUILD_SRC ($("$GVBUILD" --version 2>/dev/null || echo "?")); sizes $SIZES; -j$JOBS; load $LOAD_BEFORE"
for n in $SIZES; do noop_size "$n"; done
if [[ $TTFS_SIZE != 0 ]]; then ttfs; fi
T_END=${EPOCHREALTIME/[.,]/}
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# ---------------------------------------------------------------- report
{
    echo "| targets (layers × width) | gvbuild no-op ms | ninja no-op ms | ratio | goal ≤ ${TARGET_NOOP}× | gvbuild peak RSS MiB | ninja peak RSS MiB | ratio | goal ≤ ${TARGET_RSS}× |"
    echo "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"
    tail -n +2 "$TSV" | while IFS=$'\t' read -r n l w gv nj gr nr _ _; do
        rt=$(ratio "$gv" "$nj"); rr=$(ratio "$gr" "$nr")
        printf '| %s (%s × %s) | %s | %s | %s× | %s | %s | %s | %s× | %s |\n' "$(thousands "$n")" "$l" "$w" \
            "$gv" "$nj" "$rt" "$(verdict "$rt" "$TARGET_NOOP")" \
            "$(awk -v k="$gr" 'BEGIN{printf "%.1f", k/1024}')" "$(awk -v k="$nr" 'BEGIN{printf "%.1f", k/1024}')" \
            "$rr" "$(verdict "$rr" "$TARGET_RSS")"
    done
} >"$WORK/sizes.md"
{
    echo "| targets | gvbuild cold build ms | ninja cold build ms | ratio |"
    echo "| --- | ---: | ---: | ---: |"
    tail -n +2 "$TSV" | while IFS=$'\t' read -r n _ _ _ _ _ _ cg cn _; do
        printf '| %s | %s | %s | %s× |\n' "$(thousands "$n")" "$cg" "$cn" "$(ratio "$cg" "$cn")"
    done
} >"$WORK/cold.md"

cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || echo "?")
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
{
    echo "# gvbuild no-op and time-to-first-step results"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') by \`SIZES=\"$SIZES\" bash bench/noop.sh\` on $(nproc) cores ($cpu), $(uname -sr);"
    echo "gvbuild $rev, ninja $(ninja --version). Graphs from \`bench/gen.py --layers $LAYERS --width SIZE/$LAYERS\`"
    echo "(every 4th step with a depfile). \`-j$JOBS\` for both tools. Load average before: $LOAD_BEFORE, after: $LOAD_AFTER."
    echo "Whole run: $(( (T_END - T_START) / 1000000 )) s."
    echo
    echo "No-op build, medians of $NOOP_RUNS runs per tool ($((NOOP_RUNS * 3)) at 1,000 targets or fewer), interleaved:"
    echo
    cat "$WORK/sizes.md"
    if [[ -n $TTFS_ROW ]]; then
        echo
        echo "Time to the first step of a cold build (fresh copy, no \`.gvbuild/\`, empty cache; ninja without"
        echo "\`.ninja_log\`/\`.ninja_deps\`), medians of $TTFS_RUNS runs per tool, interleaved:"
        echo
        echo "| figure | gvbuild ms | ninja ms | ratio | goal |"
        echo "| --- | ---: | ---: | ---: | --- |"
        echo "$TTFS_ROW"
    fi
    echo
    echo "Cold builds the no-op figures started from (one run each; not a goal here):"
    echo
    cat "$WORK/cold.md"
    echo
    echo "Raw runs:"
    echo
    cat "$WORK/raw.md"
    if [[ -s $NOTES ]]; then
        echo
        echo "Notes:"
        echo
        sed 's/^/- /' "$NOTES"
    fi
} >"$WORK/report.md"

cp "$WORK/report.md" "$BENCH_SRC/noop-results.md"
# bench/noop.tsv keeps the rows of sizes this run did not measure (the 100,000 size is
# opt-in), each with the commit it was measured at, so that the plot shows every size.
{
    head -n 1 "$TSV"
    {
        tail -n +2 "$TSV"
        if [[ -f $BENCH_SRC/noop.tsv ]]; then
            awk -F'\t' -v OFS='\t' 'NR == FNR { if (FNR > 1) seen[$1] = 1; next }
                FNR > 1 && !($1 in seen) { if (NF < 10) $10 = "earlier"; print }' "$TSV" "$BENCH_SRC/noop.tsv"
        fi
    } | sort -n -k1,1
} >"$WORK/noop-all.tsv"
cp "$WORK/noop-all.tsv" "$BENCH_SRC/noop.tsv"
python3 "$BENCH_SRC/plot.py" "$BENCH_SRC/noop.tsv" "$BENCH_SRC/noop.svg"
echo
cat "$WORK/report.md"
log "written to $BENCH_SRC/noop-results.md, noop.tsv and noop.svg"
