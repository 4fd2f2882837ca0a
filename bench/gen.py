#!/usr/bin/env python3
"""Generate a layered benchmark build graph for gvbuild and ninja.

The graph has LAYERS x WIDTH targets named t_L_I. Every target reads its own
source file src/t_L_I.txt; a target of layer L > 0 also reads the outputs of
FANIN distinct targets of layer L-1, picked by a seeded RNG (so the graph is
the same on every run). Each step is

    cat src/t_L_I.txt out/DEP1.txt out/DEP2.txt | cksum > out/t_L_I.txt

A group target `all` depends on every target and is the default.

The same graph is written twice into OUT_DIR: as gevulot.yaml (gvbuild) and as
build.ninja (ninja), with identical commands, inputs and outputs. src/ and
out/ are created up front.

Options:
  --layers N --width N --fanin N --seed N   graph shape (default 20x500, 2, 1)
  --depfile-every N                         every Nth target (default 4; 0: none)
                                            also reads a header src/h/NAME.h that
                                            only its depfile names, as a compiler's
                                            -MD output would
  --stamp FILE                              start every command with
                                            `[ -e FILE ] || (set -C; date +%s%N > FILE)
                                            2>/dev/null || :; ` so that the first
                                            command to start writes the time it
                                            started (ns since the epoch) to FILE
                                            (relative to the project); the same text
                                            for both tools (time to the first step)
  --big-input PATH                          also add a target `big` whose only
                                            input is PATH (relative to OUT_DIR)
                                            and which is part of `all`
  --downstream NAME                         print how many targets (NAME
                                            included) depend on NAME
                                            transitively, and write nothing
Standard library only.
"""

import argparse
import os
import random
import re
import sys


def build_graph(layers, width, fanin, seed):
    """Return an ordered dict name -> list of dep names."""
    if fanin > width and layers > 1:
        sys.exit("gen.py: --fanin must not exceed --width")
    rng = random.Random(seed)
    graph = {}
    for layer in range(layers):
        for i in range(width):
            name = f"t_{layer}_{i}"
            if layer == 0:
                deps = []
            else:
                picks = sorted(rng.sample(range(width), fanin))
                deps = [f"t_{layer - 1}_{j}" for j in picks]
            graph[name] = deps
    return graph


def stamp_prefix(stamp):
    """Shell text that writes the time to `stamp` unless a command already did.

    `set -C` (noclobber) opens the file with O_EXCL, so of two steps that start together only
    the first to create it writes; the test in front keeps the later commands from forking.
    Steps run under `sh -e`, hence the `|| :`.
    """
    return f"[ -e {stamp} ] || (set -C; date +%s%N > {stamp}) 2>/dev/null || :; "


def command(name, deps, header, stamp=None):
    files = [f"src/{name}.txt"] + ([f"src/h/{name}.h"] if header else []) + [f"out/{d}.txt" for d in deps]
    cmd = (stamp_prefix(stamp) if stamp else "") + f"cat {' '.join(files)} | cksum > out/{name}.txt"
    if header:
        cmd += f" && printf 'out/{name}.txt: src/h/{name}.h\\n' > out/{name}.d"
    return cmd


def yaml_quote(s):
    """A YAML double-quoted scalar holding exactly `s`."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def downstream(graph, root):
    if root not in graph:
        sys.exit(f"gen.py: no target {root!r}")
    rdeps = {n: [] for n in graph}
    for n, deps in graph.items():
        for d in deps:
            rdeps[d].append(n)
    seen = {root}
    stack = [root]
    while stack:
        for m in rdeps[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", help="folder to write the project into")
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--fanin", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--depfile-every", type=int, default=4)
    ap.add_argument("--stamp", metavar="FILE",
                    help="every command first writes the time to FILE unless it exists")
    ap.add_argument("--big-input", metavar="PATH",
                    help="add target `big` reading this file (path relative to out_dir)")
    ap.add_argument("--downstream", metavar="NAME",
                    help="print the size of NAME's transitive dependents (NAME included) and exit")
    a = ap.parse_args()
    if a.layers < 1 or a.width < 1 or a.fanin < 0:
        sys.exit("gen.py: --layers and --width must be >= 1, --fanin >= 0")
    if a.stamp and not re.fullmatch(r"[A-Za-z0-9._/-]+", a.stamp):
        sys.exit("gen.py: --stamp takes a plain relative path (letters, digits, . _ / -)")

    graph = build_graph(a.layers, a.width, a.fanin, a.seed)

    if a.downstream:
        print(downstream(graph, a.downstream))
        return
    if not a.out_dir:
        ap.error("out_dir is required")

    root = a.out_dir
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    os.makedirs(os.path.join(root, "out"), exist_ok=True)
    os.makedirs(os.path.join(root, "src", "h"), exist_ok=True)
    every = a.depfile_every
    with_header = {name for k, name in enumerate(graph) if every > 0 and k % every == 0}

    # Sources: small, distinct contents.
    for name in graph:
        p = os.path.join(root, "src", f"{name}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write(f"source of {name} (seed {a.seed})\n")
        if name in with_header:
            with open(os.path.join(root, "src", "h", f"{name}.h"), "w", encoding="utf-8") as f:
                f.write(f"header of {name}\n")

    # gevulot.yaml
    y = ["# generated by bench/gen.py "
         f"--layers {a.layers} --width {a.width} --fanin {a.fanin} --seed {a.seed}"
         f" --depfile-every {every}"
         + (f" --stamp {a.stamp}" if a.stamp else "")
         + (f" --big-input {a.big_input}" if a.big_input else ""),
         "default: all", "targets:"]
    # ninja
    n = ["# generated by bench/gen.py (same graph as gevulot.yaml)",
         "ninja_required_version = 1.7",
         "",
         "rule step",
         "  command = $cmd",
         "  description = $out",
         ""]
    for name, deps in graph.items():
        inputs = [f"src/{name}.txt"] + [f"out/{d}.txt" for d in deps]
        header = name in with_header
        cmd = command(name, deps, header, a.stamp)
        y.append(f"  {name}:")
        if deps:
            y.append(f"    deps: [{', '.join(deps)}]")
        y.append(f"    inputs: [{', '.join(inputs)}]")
        y.append(f"    outputs: [out/{name}.txt]")
        y.append(f"    run: {yaml_quote(cmd)}")
        if header:
            y.append(f"    depfile: out/{name}.d")
        n.append(f"build out/{name}.txt: step {' '.join(inputs)}")
        n.append(f"  cmd = {cmd}")
        if header:
            n.append(f"  depfile = out/{name}.d")
            n.append("  deps = gcc")
    names = list(graph)
    if a.big_input:
        big = a.big_input
        cmd = f"wc -c < {big} > out/big.txt"
        y.append("  big:")
        y.append(f"    inputs: [{big}]")
        y.append("    outputs: [out/big.txt]")
        y.append(f"    run: {cmd}")
        n.append(f"build out/big.txt: step {big}")
        n.append(f"  cmd = {cmd}")
        names.append("big")
    y.append("  all:")
    y.append("    deps:")
    y.extend(f"      - {t}" for t in names)
    n.append("")
    n.append("build all: phony " + " ".join(f"out/{t}.txt" for t in names))
    n.append("default all")

    write_atomic(os.path.join(root, "gevulot.yaml"), "\n".join(y) + "\n")
    write_atomic(os.path.join(root, "build.ninja"), "\n".join(n) + "\n")
    print(f"gen.py: {len(names)} targets in {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
