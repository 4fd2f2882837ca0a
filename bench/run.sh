#!/usr/bin/env bash
# gvbuild benchmark: gvbuild against ninja (and b3sum) on a generated graph.
#
#   bash bench/run.sh
#
# Environment (all optional):
#   BENCH_DIR     parent folder for the scratch work dir (default: $TMPDIR or /tmp);
#                 needs ~BIG_SIZE + 1 GiB free; must not be inside the repository
#   GVBUILD       path of a gvbuild binary to use (default: cargo build --release)
#   LAYERS WIDTH  graph shape (default 20 x 500 = 10,000 targets)
#   JOBS          parallelism for both tools (default 2)
#   RUNS          runs of the heavy figures: cold, one-leaf, 2 GiB rehash (default 3)
#   NOOP_RUNS     runs of the no-op figures (default 10)
#   LEAF          layer-0 target whose source is changed (default t_0_0)
#   BIG_SIZE      size of the big input, as `head -c` takes it (default 2G)
#   SKIP_BIG=1    skip the big-input figures
#   KEEP_WORK=1   keep the scratch work dir
#   TARGET_COLD TARGET_NOOP TARGET_LEAF TARGET_REHASH   max ratios (1.3 1.0 1.0 1.3)
#   TARGET_RSS_MIB TARGET_EXTRA_MS                      max values (50, 5)
#
#   SIZES         target counts of the no-op-across-sizes figures, run last by bench/noop.sh
#                 with the same binary (default "1000 10000"; "1000 10000 100000" adds the
#                 100,000 size, ~15 more minutes); its time-to-first-step figure comes with it
#   SKIP_SIZES=1  skip bench/noop.sh
#
# Prints a Markdown table and writes it to bench/results.md; then runs bench/noop.sh, which
# measures the no-op at each of SIZES (wall time and peak RSS, with a plot) and the time to the
# first step of a cold build at 10,000 targets, and writes bench/noop-results.md, noop.tsv and
# noop.svg (see that script). The callgrind profile of the 10,000-target no-op is
# bench/profile.sh's.
set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/.." && pwd)

LAYERS=${LAYERS:-20}
WIDTH=${WIDTH:-500}
JOBS=${JOBS:-2}
RUNS=${RUNS:-3}
NOOP_RUNS=${NOOP_RUNS:-10}
LEAF=${LEAF:-t_0_0}
BIG_SIZE=${BIG_SIZE:-2G}
SKIP_BIG=${SKIP_BIG:-0}
TARGET_COLD=${TARGET_COLD:-1.3}
TARGET_NOOP=${TARGET_NOOP:-1.0}
TARGET_LEAF=${TARGET_LEAF:-1.0}
TARGET_REHASH=${TARGET_REHASH:-1.3}
TARGET_RSS_MIB=${TARGET_RSS_MIB:-50}
TARGET_EXTRA_MS=${TARGET_EXTRA_MS:-5}
# gvbuild runs its steps unsandboxed here, as ninja does: this compares the engines. The sandbox's
# own cost is bench/sandbox.sh's. (An environment variable, which older binaries ignore.)
export GVBUILD_NO_SANDBOX=1
unset GVBUILD_CACHE_DIR || true

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO=sudo; fi
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        $SUDO apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >&2
}
command -v python3 >/dev/null || apt_install python3
command -v ninja >/dev/null || apt_install ninja-build
command -v hyperfine >/dev/null || (apt_install hyperfine) || log "hyperfine unavailable (not needed)"
[[ -x /usr/bin/time ]] || apt_install time
if ! command -v b3sum >/dev/null; then
    if [[ $APT_UPDATED -eq 0 ]] && command -v apt-get >/dev/null; then
        $SUDO apt-get update -qq >&2; APT_UPDATED=1
    fi
    if command -v apt-cache >/dev/null && apt-cache show b3sum >/dev/null 2>&1; then
        apt_install b3sum
    else
        log "cargo install b3sum --locked"
        cargo install b3sum --locked >&2
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
(( BASH_VERSINFO[0] >= 5 )) || die "bash >= 5 needed (EPOCHREALTIME)"

. "$BENCH_SRC/setup.sh"
gvbuild_binary

# ---------------------------------------------------------------- work dir
work_dir bench
cleanup() {
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy, so that a concurrent `cargo build` cannot swap the binary mid-run.
cp "$GVBUILD" "$WORK/gvbuild"
GVBUILD_SRC=$GVBUILD
GVBUILD=$WORK/gvbuild
RES=$WORK/results; mkdir -p "$RES"
LOGS=$WORK/logs; mkdir -p "$LOGS"
: >"$RES/notes"
note() { log "NOTE: $*"; printf '%s\n' "$*" >>"$RES/notes"; }
record() { printf '%s\n' "$2" >"$RES/$1"; }
get() { cat "$RES/$1" 2>/dev/null || echo ""; }

# ---------------------------------------------------------------- helpers
# timed OUT CMD...: run CMD (stdout to OUT, stderr to OUT.err); LAST_US = wall µs.
# GV, NJ and B3 also leave CPU time (user+sys, children included) in $CPU_FILE: LAST_CPU_MS.
LAST_US=0
LAST_CPU_MS=""
CPU_FILE=/dev/null
timed() {
    local out=$1; shift
    local t0 t1 rc=0
    CPU_FILE=$out.cpu
    rm -f "$CPU_FILE"
    t0=${EPOCHREALTIME/[.,]/}
    "$@" >"$out" 2>"$out.err" || rc=$?
    t1=${EPOCHREALTIME/[.,]/}
    LAST_US=$((t1 - t0))
    LAST_CPU_MS=$(tail -n 1 "$CPU_FILE" 2>/dev/null | awk 'NF==2{printf "%.0f", ($1+$2)*1000}')
    if [[ $rc -ne 0 ]]; then
        log "command failed (exit $rc): $*"
        tail -n 20 "$out.err" >&2 || true
        return "$rc"
    fi
}
# median of µs values -> ms with 1 decimal
median_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{ if(NR==0){print "";exit}
    m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f\n", m/1000 }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{ if(NR==0){print "";exit}
    m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f\n", m }'; }
list_ms() { local s="" v; for v in "$@"; do s+="$(awk -v x="$v" 'BEGIN{printf "%.0f", x/1000}') "; done; echo "${s% }"; }

# gv_sum FILE -> "ran restored fresh failed skipped" from the summary line of --json output
gv_sum() {
    python3 - "$1" <<'EOF'
import json, sys
s = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        o = json.loads(line)
    except ValueError:
        continue
    if o.get("event") == "summary":
        s = o
if s is None:
    print("none none none none none")
else:
    print(*(s.get(k, "none") for k in ("ran", "restored", "fresh", "failed", "skipped")))
EOF
}
# nj_steps FILE -> number of steps ninja ran (0 for "no work to do")
nj_steps() {
    if grep -q 'ninja: no work to do' "$1"; then echo 0; return; fi
    grep -o '^\[[0-9]*/[0-9]*\]' "$1" | tail -n 1 | sed 's/^\[\([0-9]*\)\/.*/\1/' | grep . || echo "?"
}

TIMEF=(/usr/bin/time -f '%U %S' -o)
GV() { "${TIMEF[@]}" "$CPU_FILE" "$GVBUILD" -C "$1" -j "$JOBS" --json --cache-dir "$2" all; }
NJ() { "${TIMEF[@]}" "$CPU_FILE" ninja -C "$1" -j "$JOBS" all; }
B3() { "${TIMEF[@]}" "$CPU_FILE" b3sum "$1"; }

# check_gv FILE WHAT EXPECT_RAN (EXPECT_RAN may be "-" to skip); records a note on mismatch
check_gv() {
    local f=$1 what=$2 want=$3 ran restored fresh failed skipped
    read -r ran restored fresh failed skipped < <(gv_sum "$f")
    if [[ $ran == none ]]; then note "gvbuild $what: no summary line in --json output (see $f)"; return 0; fi
    if [[ $failed != 0 ]]; then note "gvbuild $what: failed=$failed (summary: ran=$ran restored=$restored fresh=$fresh skipped=$skipped)"; fi
    if [[ $want != - && $ran != "$want" ]]; then
        note "gvbuild $what: ran=$ran, expected $want (restored=$restored fresh=$fresh failed=$failed skipped=$skipped)"
    fi
    LAST_SUM="ran=$ran restored=$restored fresh=$fresh failed=$failed skipped=$skipped"
}
LAST_SUM=""

# run_section NAME: run function sec_NAME in a subshell with set -e; a failure is noted, not fatal
run_section() {
    local rc=0
    set +e
    ( set -e; "sec_$1" )
    rc=$?
    set -e
    if [[ $rc -ne 0 ]]; then note "section '$1' aborted (exit $rc); its figures are missing"; fi
}

GEN=(python3 "$BENCH_SRC/gen.py" --layers "$LAYERS" --width "$WIDTH")
NTARGETS=$((LAYERS * WIDTH))

# ---------------------------------------------------------------- sections
sec_cold() {
    local i gvs=() njs=() n gcpu=() ncpu=()
    for ((i = 1; i <= RUNS; i++)); do
        # Each cold run gets a new, never-used cache folder: deleting the last run's 20,000 cache
        # files right before timing would charge gvbuild for ext4's scan of recently freed
        # inodes (this disk has no journal), which no real cold build pays.
        rm -rf "$WORK/gv/out" "$WORK/gv/.gvbuild" "$WORK/cache"
        mkdir -p "$WORK/gv/out"
        sync
        timed "$LOGS/cold-gv-$i" GV "$WORK/gv" "$WORK/cache-cold-$i"
        gvs+=("$LAST_US"); gcpu+=("$LAST_CPU_MS")
        check_gv "$LOGS/cold-gv-$i" "cold build run $i" "$NTARGETS"
        log "cold gvbuild run $i: $((LAST_US / 1000)) ms ($LAST_SUM)"

        rm -rf "$WORK/nj/out" "$WORK/nj/.ninja_log" "$WORK/nj/.ninja_deps"
        mkdir -p "$WORK/nj/out"
        sync
        timed "$LOGS/cold-nj-$i" NJ "$WORK/nj"
        njs+=("$LAST_US"); ncpu+=("$LAST_CPU_MS")
        n=$(nj_steps "$LOGS/cold-nj-$i")
        [[ $n == "$NTARGETS" ]] || note "ninja cold build run $i ran $n steps, expected $NTARGETS"
        log "cold ninja   run $i: $((LAST_US / 1000)) ms ($n steps)"
    done
    mv "$WORK/cache-cold-$RUNS" "$WORK/cache"
    record cold_gv "$(median_ms "${gvs[@]}")"; record cold_gv_all "$(list_ms "${gvs[@]}")"
    record cold_gv_cpu_all "${gcpu[*]}"; record cold_nj_cpu_all "${ncpu[*]}"
    record cold_nj "$(median_ms "${njs[@]}")"; record cold_nj_all "$(list_ms "${njs[@]}")"
    # Depfiles aside: ninja (`deps = gcc`) deletes them once read into .ninja_deps.
    if ! diff -rq -x "*.d" "$WORK/gv/out" "$WORK/nj/out" >"$LOGS/cold-diff" 2>&1; then
        note "outputs of gvbuild and ninja differ after the cold build: $(head -n 3 "$LOGS/cold-diff" | tr '\n' ' ')"
    fi
}

sec_noop() {
    local i gvs=() njs=() gr=() nr=() n gcpu=() ncpu=()
    timed "$LOGS/noop-gv-warm" GV "$WORK/gv" "$WORK/cache"
    check_gv "$LOGS/noop-gv-warm" "no-op (warm-up)" 0
    timed "$LOGS/noop-nj-warm" NJ "$WORK/nj"
    # The runs are checked after the loop: a check between runs (python3) would run right
    # before the next tool's run and disturb its caches, and not the same for both tools.
    for ((i = 1; i <= NOOP_RUNS; i++)); do
        timed "$LOGS/noop-gv-$i" GV "$WORK/gv" "$WORK/cache"
        gvs+=("$LAST_US"); gcpu+=("$LAST_CPU_MS")
        timed "$LOGS/noop-nj-$i" NJ "$WORK/nj"
        njs+=("$LAST_US"); ncpu+=("$LAST_CPU_MS")
    done
    for ((i = 1; i <= NOOP_RUNS; i++)); do
        check_gv "$LOGS/noop-gv-$i" "no-op run $i" 0
        n=$(nj_steps "$LOGS/noop-nj-$i")
        [[ $n == 0 ]] || note "ninja no-op run $i ran $n steps"
    done
    record noop_gv "$(median_ms "${gvs[@]}")"; record noop_gv_all "$(list_ms "${gvs[@]}")"
    record noop_gv_cpu_all "${gcpu[*]}"; record noop_nj_cpu_all "${ncpu[*]}"
    record noop_nj "$(median_ms "${njs[@]}")"; record noop_nj_all "$(list_ms "${njs[@]}")"
    log "no-op medians: gvbuild $(get noop_gv) ms, ninja $(get noop_nj) ms"
    for ((i = 1; i <= 3; i++)); do
        /usr/bin/time -f %M -o "$LOGS/rss-gv-$i" "$GVBUILD" -C "$WORK/gv" -j "$JOBS" --json \
            --cache-dir "$WORK/cache" all >"$LOGS/rss-gv-$i.out" 2>&1
        gr+=("$(tail -n 1 "$LOGS/rss-gv-$i")")
        /usr/bin/time -f %M -o "$LOGS/rss-nj-$i" ninja -C "$WORK/nj" -j "$JOBS" all >/dev/null 2>&1
        nr+=("$(tail -n 1 "$LOGS/rss-nj-$i")")
    done
    record rss_gv "$(median "${gr[@]}")"; record rss_nj "$(median "${nr[@]}")"
    log "no-op peak RSS: gvbuild $(get rss_gv) KiB, ninja $(get rss_nj) KiB"
}

sec_leaf() {
    local i gvs=() njs=() want n nonce r_ran r_restored gcpu=() ncpu=()
    want=$("${GEN[@]}" --downstream "$LEAF")
    record leaf_steps "$want"
    cp "$WORK/gv/src/$LEAF.txt" "$WORK/leaf.orig"
    for ((i = 1; i <= RUNS; i++)); do
        nonce="change $i $(date +%s%N)"
        printf '%s\n' "$nonce" >>"$WORK/gv/src/$LEAF.txt"
        timed "$LOGS/leaf-gv-$i" GV "$WORK/gv" "$WORK/cache"
        gvs+=("$LAST_US"); gcpu+=("$LAST_CPU_MS")
        check_gv "$LOGS/leaf-gv-$i" "one-leaf rebuild run $i" "$want"
        log "leaf gvbuild run $i: $((LAST_US / 1000)) ms ($LAST_SUM)"
        cp "$WORK/leaf.orig" "$WORK/gv/src/$LEAF.txt"
        timed "$LOGS/leaf-gv-restore-$i" GV "$WORK/gv" "$WORK/cache"
        check_gv "$LOGS/leaf-gv-restore-$i" "rebuild after restoring the leaf, run $i" -
        log "  gvbuild back to the original leaf: $((LAST_US / 1000)) ms ($LAST_SUM)"
        if [[ $i == 1 ]]; then
            record leaf_restore_sum "$LAST_SUM"; record leaf_restore_ms "$((LAST_US / 1000))"
            read -r r_ran r_restored _ < <(gv_sum "$LOGS/leaf-gv-restore-$i")
            if [[ $r_ran != 0 && $r_restored == 0 ]]; then
                note "gvbuild reran $r_ran steps instead of restoring them from the cache after the leaf was changed back to content it had already built"
            fi
        fi

        printf '%s\n' "$nonce" >>"$WORK/nj/src/$LEAF.txt"
        timed "$LOGS/leaf-nj-$i" NJ "$WORK/nj"
        njs+=("$LAST_US"); ncpu+=("$LAST_CPU_MS")
        n=$(nj_steps "$LOGS/leaf-nj-$i")
        [[ $n == "$want" ]] || note "ninja one-leaf run $i ran $n steps, expected $want"
        log "leaf ninja   run $i: $((LAST_US / 1000)) ms ($n steps)"
        cp "$WORK/leaf.orig" "$WORK/nj/src/$LEAF.txt"
        timed "$LOGS/leaf-nj-restore-$i" NJ "$WORK/nj"
    done
    record leaf_gv "$(median_ms "${gvs[@]}")"; record leaf_gv_all "$(list_ms "${gvs[@]}")"
    record leaf_gv_cpu_all "${gcpu[*]}"; record leaf_nj_cpu_all "${ncpu[*]}"
    record leaf_nj "$(median_ms "${njs[@]}")"; record leaf_nj_all "$(list_ms "${njs[@]}")"
    # After restoring, both trees must again be up to date and equal.
    timed "$LOGS/leaf-gv-final" GV "$WORK/gv" "$WORK/cache"
    check_gv "$LOGS/leaf-gv-final" "no-op after the one-leaf runs" 0
    if ! diff -rq -x "*.d" "$WORK/gv/out" "$WORK/nj/out" >"$LOGS/leaf-diff" 2>&1; then
        note "outputs of gvbuild and ninja differ after the one-leaf runs: $(head -n 3 "$LOGS/leaf-diff" | tr '\n' ' ')"
    fi
}

sec_big() {
    local i need avail gs=() gb=() bs=() after gcpu=() bcpu=()
    local S=$WORK/small SB=$WORK/smallbig
    need=$(python3 -c "import sys; s=sys.argv[1]; m={'K':1<<10,'M':1<<20,'G':1<<30}; print((int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))//1024 + (1<<20))" "$BIG_SIZE")
    avail=$(df -Pk "$WORK" | awk 'NR==2{print $4}')
    (( avail > need )) || die "not enough space in $WORK for a $BIG_SIZE file: ${avail} KiB free, need ${need} KiB"
    python3 "$BENCH_SRC/gen.py" "$S" --layers 2 --width 10 2>/dev/null
    python3 "$BENCH_SRC/gen.py" "$SB" --layers 2 --width 10 --big-input data/big.bin 2>/dev/null
    mkdir -p "$SB/data"
    log "writing a $BIG_SIZE random file"
    head -c "$BIG_SIZE" /dev/urandom >"$SB/data/big.bin"
    timed "$LOGS/small-cold" GV "$S" "$WORK/cache-s"
    check_gv "$LOGS/small-cold" "small project cold build" 20
    timed "$LOGS/smallbig-cold" GV "$SB" "$WORK/cache-sb"
    check_gv "$LOGS/smallbig-cold" "small+big project cold build" 21
    log "small+big cold build: $((LAST_US / 1000)) ms ($LAST_SUM)"
    timed "$LOGS/small-warm" GV "$S" "$WORK/cache-s"
    timed "$LOGS/smallbig-warm" GV "$SB" "$WORK/cache-sb"
    check_gv "$LOGS/smallbig-warm" "small+big no-op (warm-up)" 0

    for ((i = 1; i <= NOOP_RUNS; i++)); do
        timed "$LOGS/small-noop-$i" GV "$S" "$WORK/cache-s"
        gs+=("$LAST_US")
        check_gv "$LOGS/small-noop-$i" "small no-op run $i" 0
        timed "$LOGS/smallbig-noop-$i" GV "$SB" "$WORK/cache-sb"
        gb+=("$LAST_US")
        check_gv "$LOGS/smallbig-noop-$i" "small+big no-op (untouched) run $i" 0
    done
    record small_noop "$(median_ms "${gs[@]}")"; record small_noop_all "$(list_ms "${gs[@]}")"
    record smallbig_noop "$(median_ms "${gb[@]}")"; record smallbig_noop_all "$(list_ms "${gb[@]}")"
    log "untouched no-op: small $(get small_noop) ms, small+big $(get smallbig_noop) ms"

    gs=()
    b3sum "$SB/data/big.bin" >/dev/null   # page cache warm-up for b3sum
    for ((i = 1; i <= RUNS; i++)); do
        touch "$SB/data/big.bin"
        # gvbuild distrusts (and rehashes again next time) a file hashed within 50 ms of its
        # mtime; a real edit is never that close to the build, so leave a gap.
        sleep 0.2
        timed "$LOGS/rehash-gv-$i" GV "$SB" "$WORK/cache-sb"
        gs+=("$LAST_US"); gcpu+=("$LAST_CPU_MS")
        check_gv "$LOGS/rehash-gv-$i" "no-op after touching the big input, run $i" 0
        log "rehash gvbuild run $i: $((LAST_US / 1000)) ms ($LAST_SUM)"
        timed "$LOGS/rehash-b3-$i" B3 "$SB/data/big.bin"
        bs+=("$LAST_US"); bcpu+=("$LAST_CPU_MS")
        log "b3sum          run $i: $((LAST_US / 1000)) ms"
    done
    record rehash_gv "$(median_ms "${gs[@]}")"; record rehash_gv_all "$(list_ms "${gs[@]}")"
    record rehash_b3 "$(median_ms "${bs[@]}")"; record rehash_b3_all "$(list_ms "${bs[@]}")"
    record rehash_gv_cpu_all "${gcpu[*]}"; record rehash_b3_cpu_all "${bcpu[*]}"
    # The rehash must be remembered: the next no-op should be cheap again.
    timed "$LOGS/after-rehash" GV "$SB" "$WORK/cache-sb"
    after=$LAST_US
    check_gv "$LOGS/after-rehash" "no-op after the rehash runs" 0
    record after_rehash "$(median_ms "$after")"
    local base; base=$(median "${gb[@]}")
    if (( after > base + (gs[0] - base) / 2 )); then
        note "gvbuild no-op right after the rehash runs still took $((after / 1000)) ms (rehash run: $((gs[0] / 1000)) ms, untouched no-op: $((base / 1000)) ms): the rehash does not seem to be remembered"
    fi
    rm -f "$SB/data/big.bin"
}

# ---------------------------------------------------------------- main
T_START=${EPOCHREALTIME/[.,]/}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
log "work dir $WORK; gvbuild $GVBUILD_SRC ($("$GVBUILD" --version 2>/dev/null || echo "?")); graph ${LAYERS}x${WIDTH}; -j$JOBS; load $LOAD_BEFORE"
"${GEN[@]}" "$WORK/gv"
"${GEN[@]}" "$WORK/nj"

log "== cold build";     run_section cold
log "== no-op build";    run_section noop
log "== one-leaf change"; run_section leaf
if [[ $SKIP_BIG != 1 ]]; then log "== big input"; run_section big; fi
T_END=${EPOCHREALTIME/[.,]/}

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if(a==""||b==""||b+0==0){print "n/a"} else printf "%.2f×\n", a/b }'; }
# verdict VALUE LIMIT -> "met" / "missed"
verdict() { awk -v v="$1" -v l="$2" 'BEGIN{ if(v==""){print "n/a"} else if(v+0<=l+0) print "met"; else print "missed" }'; }
ratio_num() { awk -v a="$1" -v b="$2" 'BEGIN{ if(a==""||b==""||b+0==0){print ""} else printf "%.4f\n", a/b }'; }
ms() { [[ -n $1 ]] && echo "$1" || echo "n/a"; }

row_ratio() { # label gv peer peer_label target
    local r; r=$(ratio_num "$2" "$3")
    printf '| %s | %s | %s | %s | ≤ %s× vs %s (%s) |\n' "$1" "$(ms "$2")" "$(ms "$3")" "$(ratio "$2" "$3")" "$5" "$4" "$(verdict "$r" "$5")"
}

rss_gv=$(get rss_gv); rss_nj=$(get rss_nj)
rss_gv_mib=$( [[ -n $rss_gv ]] && awk -v k="$rss_gv" 'BEGIN{printf "%.1f", k/1024}' || echo "")
rss_nj_mib=$( [[ -n $rss_nj ]] && awk -v k="$rss_nj" 'BEGIN{printf "%.1f", k/1024}' || echo "")
extra=""
if [[ -n $(get smallbig_noop) && -n $(get small_noop) ]]; then
    extra=$(awk -v a="$(get smallbig_noop)" -v b="$(get small_noop)" 'BEGIN{printf "%+.1f", a-b}')
fi

{
    echo "| figure | gvbuild ms | peer ms | ratio | target |"
    echo "| --- | ---: | ---: | ---: | --- |"
    row_ratio "cold build, ${NTARGETS} steps, -j$JOBS (peer: ninja)" "$(get cold_gv)" "$(get cold_nj)" ninja "$TARGET_COLD"
    row_ratio "no-op build, ${NTARGETS} targets (peer: ninja)" "$(get noop_gv)" "$(get noop_nj)" ninja "$TARGET_NOOP"
    printf '| no-op peak RSS, MiB (peer: ninja) | %s MiB | %s MiB | %s | ≤ %s MiB (%s) |\n' \
        "$(ms "$rss_gv_mib")" "$(ms "$rss_nj_mib")" "$(ratio "$rss_gv" "$rss_nj")" "$TARGET_RSS_MIB" "$(verdict "$rss_gv_mib" "$TARGET_RSS_MIB")"
    row_ratio "one-leaf change, $(get leaf_steps) steps rerun, -j$JOBS (peer: ninja)" "$(get leaf_gv)" "$(get leaf_nj)" ninja "$TARGET_LEAF"
    if [[ $SKIP_BIG != 1 ]]; then
        row_ratio "no-op after \`touch\` of a $BIG_SIZE input (peer: \`b3sum FILE\`)" "$(get rehash_gv)" "$(get rehash_b3)" b3sum "$TARGET_REHASH"
        printf '| extra no-op cost of an untouched %s input (peer: same project without it) | %s | %s | — | ≤ %s ms (%s) |\n' \
            "$BIG_SIZE" "$(ms "$extra")" "$(ms "$(get small_noop)")" "$TARGET_EXTRA_MS" "$(verdict "$extra" "$TARGET_EXTRA_MS")"
    fi
} >"$RES/table.md"

cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || echo "?")
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
{
    echo "# gvbuild benchmark results"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') by \`bash bench/run.sh\` on $(nproc) cores ($cpu), $(uname -sr);"
    echo "gvbuild $rev, $(ninja --version | sed 's/^/ninja /'), $(b3sum --version)."
    echo "Graph: $LAYERS layers × $WIDTH targets, each \`cat src + 2 deps | cksum\`. Medians of $RUNS runs"
    echo "(cold, one-leaf, rehash) and $NOOP_RUNS runs (no-op). Load average before: $LOAD_BEFORE."
    echo "Whole run: $(( (T_END - T_START) / 1000000 )) s."
    echo
    cat "$RES/table.md"
    echo
    echo "Raw runs (ms):"
    echo
    for k in cold_gv cold_nj noop_gv noop_nj leaf_gv leaf_nj rehash_gv rehash_b3 small_noop smallbig_noop; do
        [[ -n $(get "${k}_all") ]] && echo "- $k: $(get "${k}_all")"
    done
    [[ -n $(get leaf_restore_sum) ]] && echo "- gvbuild rebuild after restoring the leaf (run 1): $(get leaf_restore_ms) ms, $(get leaf_restore_sum)"
    [[ -n $(get after_rehash) ]] && echo "- gvbuild no-op right after the rehash runs: $(get after_rehash) ms"
    echo
    echo "CPU time per run, user+sys with children (ms; less sensitive to other load than wall time; 10 ms resolution):"
    echo
    for k in cold_gv cold_nj noop_gv noop_nj leaf_gv leaf_nj rehash_gv rehash_b3; do
        [[ -n $(get "${k}_cpu_all") ]] && echo "- $k: $(get "${k}_cpu_all")"
    done
    if [[ -s $RES/notes ]]; then
        echo
        echo "Notes:"
        echo
        sed 's/^/- /' "$RES/notes"
    fi
} >"$RES/report.md"

cp "$RES/report.md" "$BENCH_SRC/results.md"
echo
cat "$RES/report.md"
log "written to $BENCH_SRC/results.md"

if [[ ${SKIP_SIZES:-0} != 1 ]]; then
    log "== no-op across sizes and time to the first step: bench/noop.sh (SIZES=\"${SIZES:-1000 10000}\")"
    SIZES=${SIZES:-1000 10000} GVBUILD=$GVBUILD JOBS=$JOBS NOOP_RUNS=$NOOP_RUNS BENCH_DIR=$PARENT \
        bash "$BENCH_SRC/noop.sh"
fi
