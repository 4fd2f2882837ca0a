#!/usr/bin/env python3
"""Per-function inclusive instruction counts from a callgrind.out file.

    python3 bench/callgrind_inclusive.py callgrind.out > funcs.tsv

Prints "TOTAL<TAB>n" and then one "inclusive<TAB>self<TAB>function" line per function, largest
first. A function's inclusive count is its own instructions plus the cost of every call it
makes to another function, summed over all its call sites, inlined code and threads.

Why not callgrind_annotate --inclusive=yes: it lists a function once per source file its code
came from (inlining), with the calls made from each file's lines only, so a function such as
gvbuild's Reporter::step shows as a dozen entries of which none is the whole. Standard library
only; reads the format callgrind writes (name compression, cost lines after `calls=`).
"""

import re
import sys
from collections import defaultdict

NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: callgrind_inclusive.py CALLGRIND_OUT")
    names = {}
    self_cost = defaultdict(int)
    call_cost = defaultdict(int)
    total = None
    files = {}
    file_of = {}  # symbol-less functions (hand-written assembly): the file their code is in
    fl = ""
    fn = None
    callee = None
    after_calls = False

    def resolve(spec):
        m = NAME.match(spec)
        if not m:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec)

    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                if after_calls:
                    if callee != fn:
                        call_cost[fn] += cost
                    after_calls = False
                elif fn is not None:
                    self_cost[fn] += cost
                    if fn.startswith("0x") and fn not in file_of:
                        file_of[fn] = fl
                continue
            if line.startswith(("fl=", "fi=", "fe=")):
                m = NAME.match(line[3:])
                if m and m.group(2) is not None:
                    files[m.group(1)] = m.group(2)
                fl = files.get(m.group(1), "") if m else line[3:]
            elif line.startswith(("cfi=", "cfl=")):
                m = NAME.match(line[4:])  # the same name table as fl=
                if m and m.group(2) is not None:
                    files[m.group(1)] = m.group(2)
            elif line.startswith("fn="):
                fn = resolve(line[3:])
            elif line.startswith("cfn="):
                callee = resolve(line[4:])
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        total = sum(self_cost.values())
    print(f"TOTAL\t{total}")
    funcs = set(self_cost) | set(call_cost)
    rows = sorted(((self_cost[n] + call_cost[n], self_cost[n], n) for n in funcs), reverse=True)
    for inc, own, n in rows:
        where = file_of.get(n, "").rsplit("/", 1)[-1]
        print(f"{inc}\t{own}\t{n} ({where})" if where and where != "???" else f"{inc}\t{own}\t{n}")


if __name__ == "__main__":
    main()
