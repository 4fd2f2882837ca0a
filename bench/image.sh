#!/usr/bin/env bash
# Native image benchmark (issue: native, reproducible Nanos images): write the image of a 1 GiB
# stage root, against `cp -a` of that root, measured in the same run. Two figures:
#   - writing the image: the image step's "run" phase (GVBUILD_TIMINGS=1), the native writer;
#   - the whole image step, storing the image in the cache: a whole `gvbuild --rebuild image`
#     into an empty cache (the writer, hashing the image, copying it into the cache).
# Medians of RUNS runs, interleaved, page cache warm for both tools. Usage: bash bench/image.sh
set -euo pipefail
RUNS=${RUNS:-5}
BIG=${BIG:-6}            # files of 128 MiB
SMALL=${SMALL:-2000}     # files of 128 KiB
here=$(cd "$(dirname "$0")/.." && pwd)
(cd "$here" && cargo build --release --quiet)
gv="$here/target/release/gvbuild"
work=$(mktemp -d "${BENCH_DIR:-/tmp}/gvimage.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A stand-in Nanos release (a real one cannot be downloaded here): an ELF-headed kernel and a
# boot.img carrying the filesystem region record.
mkdir -p "$work/p/nanos" "$work/p/root/lib/x86_64-linux-gnu"
python3 - "$work/p/nanos" <<'PY'
import os, struct, sys
d = sys.argv[1]
open(os.path.join(d, "kernel.img"), "wb").write(b"\x7fELF\x02\x01\x01\0" + os.urandom(8 << 20))
b = bytearray(512)
b[0x1aa:0x1b2] = struct.pack("<Q", 0x8000); b[0x1b2:0x1ba] = struct.pack("<Q", 32 * 512)
b[0x1ba:0x1be] = struct.pack("<I", 12); b[510] = 0x55; b[511] = 0xaa
open(os.path.join(d, "boot.img"), "wb").write(bytes(b) + os.urandom(32 * 512))
PY
head -c 1M /dev/urandom > "$work/p/root/prover"; chmod +x "$work/p/root/prover"
for i in $(seq 1 "$BIG"); do head -c 128M /dev/urandom > "$work/p/root/lib/x86_64-linux-gnu/libbig$i.so"; done
head -c $((SMALL * 128 * 1024)) /dev/urandom | split -b 128K -a 4 - "$work/p/root/lib/x86_64-linux-gnu/libsmall"
echo '{"Program": "prover", "Dirs": ["lib"], "Mounts": {"%1": "/workspace"}}' > "$work/p/prover.json"
cat > "$work/p/gevulot.yaml" <<YAML
targets:
  image:
    image:
      builder: native
      release: nanos
      manifest: prover.json
      root: root
      into: prover.img
YAML
"$gv" -C "$work/p" --cache-dir "$work/cache" >/dev/null
root_mib=$(du -sm --apparent-size "$work/p/root" | cut -f1)

. "$here/bench/common.sh"
declare -a write store cp_a
for _ in $(seq 1 "$RUNS"); do
  rm -rf "$work/copy-of"; sync
  cp_a+=("$(ms cp -a "$work/p/root" "$work/copy-of")")
  # Like the copy's target, the old image and cache are removed before the clock starts.
  rm -rf "$work/cache" "$work/p/prover.img"; sync
  t0=$(date +%s%N)
  GVBUILD_TIMINGS=1 "$gv" -C "$work/p" --cache-dir "$work/cache" --rebuild image >/dev/null 2>"$work/timings"
  store+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
  grep "^timing" "$work/timings" | tr "\n" " " >> "$work/phases"; echo >> "$work/phases"
  write+=("$(sed -n 's/^timing: step image: run \([0-9.]*\) ms.*/\1/p' "$work/timings")")
done
# The timed builds really built, and rebuilding gives the same bytes.
grep -q '^timing: step image: run' "$work/timings" || { echo "the image step did not run" >&2; exit 1; }
cp "$work/p/prover.img" "$work/first.img"
"$gv" -C "$work/p" --cache-dir "$work/cache" --rebuild image >/dev/null
cmp "$work/p/prover.img" "$work/first.img" || { echo "the rebuilt image differs" >&2; exit 1; }
img_mib=$(( $(stat -c %s "$work/p/prover.img") / 1048576 ))
w=$(median "${write[@]}"); s=$(median "${store[@]}"); c=$(median "${cp_a[@]}")
echo "| figure ($root_mib MiB stage root, $((BIG + SMALL + 1)) files; image $img_mib MiB) | gvbuild ms | \`cp -a\` ms | ratio | target |"
echo "| --- | ---: | ---: | ---: | --- |"
echo "| write the image (the image step's run phase) | $w | $c | $(ratio "$w" "$c")× | ≤ 1.5× |"
echo "| the whole image step, storing the image in the cache | $s | $c | $(ratio "$s" "$c")× | ≤ 2.5× |"
echo "raw: write ${write[*]} / whole step ${store[*]} / cp -a ${cp_a[*]}"
echo "phases of each run:"; cat "$work/phases"
