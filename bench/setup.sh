# Set-up shared by bench/run.sh, noop.sh, profile.sh and remote.sh (sourced, not run). The
# caller sets REPO (the repository) and defines log and die before calling these.

# gvbuild_binary: keep $GVBUILD when it is set, else build the release binary of $REPO
# (`cargo build --release`, into cargo's target folder) and set GVBUILD to it; dies unless
# GVBUILD is then an executable.
gvbuild_binary() {
    if [[ -z ${GVBUILD:-} ]]; then
        log "cargo build --release"
        (cd "$REPO" && cargo build --release >&2) || die "cargo build --release failed"
        local tdir
        tdir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
        GVBUILD="$tdir/release/gvbuild"
    fi
    [[ -x $GVBUILD ]] || die "no gvbuild binary at $GVBUILD"
}

# work_dir NAME: a new scratch folder gvbuild-NAME.XXXXXX under $BENCH_DIR (default $TMPDIR or
# /tmp), which must not be inside the repository; sets PARENT (the resolved parent) and WORK.
work_dir() {
    PARENT=${BENCH_DIR:-${TMPDIR:-/tmp}}
    mkdir -p "$PARENT"
    PARENT=$(cd "$PARENT" && pwd -P)
    case "$PARENT/" in "$(cd "$REPO" && pwd -P)/"*) die "BENCH_DIR ($PARENT) is inside the repository";; esac
    WORK=$(mktemp -d "$PARENT/gvbuild-$1.XXXXXX")
}
