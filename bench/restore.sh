#!/usr/bin/env bash
# Restore benchmark (issue: the Gevulot pipeline): a 1 GiB fetched-and-extracted asset folder is
# deleted and restored from the cache. Compared, in one run, with `cp -a` of the folder (for
# `restore: copy`) and with `b3sum` over its files (for `restore: hardlink`, where verifying
# the blobs is the whole cost). Medians of RUNS runs. Usage: bash bench/restore.sh
set -euo pipefail
RUNS=${RUNS:-3}
FILES=${FILES:-8}
FILE_MIB=${FILE_MIB:-128}
here=$(cd "$(dirname "$0")/.." && pwd)
command -v b3sum >/dev/null || { apt-get install -y -qq b3sum >/dev/null 2>&1 || cargo install b3sum --locked; }
(cd "$here" && cargo build --release --quiet)
gv="$here/target/release/gvbuild"
work=$(mktemp -d "${BENCH_DIR:-/tmp}/gvrestore.XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/src/assets"
for i in $(seq 1 "$FILES"); do head -c "${FILE_MIB}M" /dev/urandom > "$work/src/assets/lib$i.so.1"; done
tar -C "$work/src" -cf "$work/assets.tar" assets
sha=$(sha256sum "$work/assets.tar" | cut -d' ' -f1)
for mode in copy hardlink; do
  mkdir -p "$work/p-$mode"
  cat > "$work/p-$mode/gevulot.yaml" <<YAML
targets:
  assets:
    restore: $mode
    fetch:
      url: file://$work/assets.tar
      sha256: $sha
      extract: { strip_components: 1 }
      into: build/assets
YAML
  "$gv" -C "$work/p-$mode" --cache-dir "$work/cache" >/dev/null
done

. "$here/bench/common.sh"
declare -a gv_copy cp_a gv_link b3
for _ in $(seq 1 "$RUNS"); do
  rm -rf "$work/p-copy/build/assets"; sync
  gv_copy+=("$(ms "$gv" -C "$work/p-copy" --cache-dir "$work/cache")")
  rm -rf "$work/copy-of"; sync
  cp_a+=("$(ms cp -a "$work/p-copy/build/assets" "$work/copy-of")")
  rm -rf "$work/p-hardlink/build/assets"; sync
  gv_link+=("$(ms "$gv" -C "$work/p-hardlink" --cache-dir "$work/cache")")
  b3+=("$(ms sh -c "b3sum $work/p-copy/build/assets/*")")
done
# The restores really restored (no run), and the bytes are right.
for mode in copy hardlink; do
  rm -rf "$work/p-$mode/build/assets"
  "$gv" -C "$work/p-$mode" --cache-dir "$work/cache" --json | grep -q '"restored":1' || { echo "$mode: not restored" >&2; exit 1; }
  diff -r "$work/src/assets" "$work/p-$mode/build/assets" >/dev/null || { echo "$mode: restored bytes differ" >&2; exit 1; }
done
gc=$(median "${gv_copy[@]}"); ca=$(median "${cp_a[@]}"); gl=$(median "${gv_link[@]}"); bs=$(median "${b3[@]}")
echo "| figure | gvbuild ms | peer ms | ratio | target |"
echo "| --- | ---: | ---: | ---: | --- |"
echo "| restore $((FILES * FILE_MIB)) MiB asset folder, \`restore: copy\` (peer: \`cp -a\`) | $gc | $ca | $(ratio "$gc" "$ca")× | ≤ 1.0× |"
echo "| restore it with \`restore: hardlink\` (peer: \`b3sum\` of its files) | $gl | $bs | $(ratio "$gl" "$bs")× | ≤ 1.2× |"
echo "raw: copy ${gv_copy[*]} / cp -a ${cp_a[*]} / hardlink ${gv_link[*]} / b3sum ${b3[*]}"
