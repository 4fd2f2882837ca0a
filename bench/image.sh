#!/usr/bin/env bash
# Native image benchmark (issue: native, reproducible Nanos images): write the image of a 1 GiB
# stage root, against `cp -a` of that root, measured in the same run. Two figures:
#   - the image step alone (`cache: false`: write the image and hash it, store nothing);
#   - the whole image step with storing the image in the cache (`--rebuild image`).
# Medians of RUNS runs, page cache warm for both tools. Usage: bash bench/image.sh
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
mkdir -p "$work/nanos" "$work/root/lib/x86_64-linux-gnu"
python3 - "$work/nanos" <<'PY'
import os, struct, sys
d = sys.argv[1]
open(os.path.join(d, "kernel.img"), "wb").write(b"\x7fELF\x02\x01\x01\0" + os.urandom(8 << 20))
b = bytearray(512)
b[0x1aa:0x1b2] = struct.pack("<Q", 0x8000); b[0x1b2:0x1ba] = struct.pack("<Q", 32 * 512)
b[0x1ba:0x1be] = struct.pack("<I", 12); b[510] = 0x55; b[511] = 0xaa
open(os.path.join(d, "boot.img"), "wb").write(bytes(b) + os.urandom(32 * 512))
PY
head -c 1M /dev/urandom > "$work/root/prover"; chmod +x "$work/root/prover"
for i in $(seq 1 "$BIG"); do head -c 128M /dev/urandom > "$work/root/lib/x86_64-linux-gnu/libbig$i.so"; done
head -c $((SMALL * 128 * 1024)) /dev/urandom | split -b 128K -a 4 - "$work/root/lib/x86_64-linux-gnu/libsmall"
echo '{"Program": "prover", "Dirs": ["lib"], "Mounts": {"%1": "/workspace"}}' > "$work/prover.json"
for mode in nocache cache; do
  mkdir -p "$work/p-$mode"
  ln -s ../nanos "$work/p-$mode/nanos"; ln -s ../root "$work/p-$mode/root"; ln -s ../prover.json "$work/p-$mode/prover.json"
  cache_line=$([ "$mode" = nocache ] && echo "    cache: false" || echo "")
  cat > "$work/p-$mode/gevulot.yaml" <<YAML
targets:
  image:
$cache_line
    image:
      builder: native
      release: nanos
      manifest: prover.json
      root: root
      into: prover.img
YAML
  "$gv" -C "$work/p-$mode" --cache-dir "$work/cache-$mode" >/dev/null
done
root_mib=$(du -sm --apparent-size "$work/root" | cut -f1)

ms() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL); print(round((time.perf_counter()-t)*1000,1))' "$@"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
declare -a write store cp_a
for _ in $(seq 1 "$RUNS"); do
  rm -rf "$work/copy-of"; sync
  cp_a+=("$(ms cp -a "$work/root" "$work/copy-of")")
  rm -f "$work/p-nocache/prover.img"; sync
  write+=("$(ms "$gv" -C "$work/p-nocache" --cache-dir "$work/cache-nocache")")
  rm -rf "$work/cache-cache"; sync
  store+=("$(ms "$gv" -C "$work/p-cache" --cache-dir "$work/cache-cache" --rebuild image)")
done
# The timed builds really built, and both images are the same bytes (the same inputs).
"$gv" -C "$work/p-nocache" --cache-dir "$work/cache-nocache" --json | grep -q '"ran":1' || { echo "nocache: did not run" >&2; exit 1; }
cmp "$work/p-nocache/prover.img" "$work/p-cache/prover.img" || { echo "the two images differ" >&2; exit 1; }
img_mib=$(( $(stat -c %s "$work/p-cache/prover.img") / 1048576 ))
w=$(median "${write[@]}"); s=$(median "${store[@]}"); c=$(median "${cp_a[@]}")
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "| figure ($root_mib MiB stage root, $((BIG + SMALL + 1)) files; image $img_mib MiB) | gvbuild ms | \`cp -a\` ms | ratio | target |"
echo "| --- | ---: | ---: | ---: | --- |"
echo "| write the image (\`cache: false\`: write and hash it) | $w | $c | $(ratio "$w" "$c")× | ≤ 1.5× |"
echo "| the whole image step, storing the image in the cache | $s | $c | $(ratio "$s" "$c")× | ≤ 2.5× |"
echo "raw: write ${write[*]} / store ${store[*]} / cp -a ${cp_a[*]}"
