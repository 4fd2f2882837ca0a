#!/usr/bin/env python3
"""Draw bench/noop.tsv (written by bench/noop.sh) as an SVG: no-op wall time and peak RSS
against the number of targets, gvbuild and ninja, both axes logarithmic.

    python3 bench/plot.py bench/noop.tsv bench/noop.svg

Standard library only: the SVG is written by hand.
"""

import csv
import math
import sys

PANEL_W, PANEL_H = 420, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 18, 40, 48
SERIES = [("gvbuild", "#d62728", "gv"), ("ninja", "#1f77b4", "nj")]


def nice_ticks(lo, hi):
    """Values 1, 2, 5 x 10^k within [lo, hi] (at least the two ends' decades)."""
    ticks = []
    k = math.floor(math.log10(lo))
    while 10 ** k <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** k
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        k += 1
    return ticks


def fmt(v):
    if v >= 1000 and v % 1000 == 0:
        return f"{v // 1000:g}k" if v < 10 ** 6 else f"{v / 10 ** 6:g}M"
    return f"{v:g}"


def panel(x0, title, ylabel, rows, key, scale):
    xs = [r["targets"] for r in rows]
    ys = [r[f"{s}_{key}"] / scale for _, _, s in SERIES for r in rows]
    xlo, xhi = min(xs) / 1.5, max(xs) * 1.5
    ylo = 10 ** math.floor(math.log10(min(ys)))
    yhi = 10 ** math.ceil(math.log10(max(ys)))
    if yhi / ylo < 10:
        yhi = ylo * 10
    w = PANEL_W - MARGIN_L - MARGIN_R
    h = PANEL_H - MARGIN_T - MARGIN_B

    def px(x):
        return x0 + MARGIN_L + w * (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))

    def py(y):
        return MARGIN_T + h - h * (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo))

    out = [f'<text x="{x0 + PANEL_W / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>',
           f'<rect x="{x0 + MARGIN_L}" y="{MARGIN_T}" width="{w}" height="{h}" fill="none" stroke="#444"/>']
    for t in nice_ticks(ylo, yhi):
        y = py(t)
        out.append(f'<line x1="{x0 + MARGIN_L}" y1="{y:.1f}" x2="{x0 + MARGIN_L + w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{fmt(t)}</text>')
    for t in xs:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{MARGIN_T}" x2="{x:.1f}" y2="{MARGIN_T + h}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{MARGIN_T + h + 16}" text-anchor="middle" font-size="11">{fmt(t)}</text>')
    out.append(f'<text x="{x0 + MARGIN_L + w / 2}" y="{PANEL_H - 10}" text-anchor="middle" font-size="12">targets</text>')
    out.append(f'<text transform="translate({x0 + 16},{MARGIN_T + h / 2}) rotate(-90)" text-anchor="middle" '
               f'font-size="12">{ylabel}</text>')
    for name, colour, s in SERIES:
        pts = [(px(r["targets"]), py(r[f"{s}_{key}"] / scale)) for r in rows]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for (a, b), r in zip(pts, rows):
            v = r[f"{s}_{key}"] / scale
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}"/>')
            dy = -8 if s == "gv" else 16
            out.append(f'<text x="{a + 5:.1f}" y="{b + dy:.1f}" font-size="10" fill="{colour}">{v:.1f}</text>')
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py NOOP_TSV OUT_SVG")
    with open(sys.argv[1], encoding="utf-8") as f:
        rows = []
        for r in csv.DictReader(f, delimiter="\t"):
            # `commit` (which build a row was measured with) is a label, not a number.
            rows.append(
                {k: int(v) if k == "targets" else float(v) for k, v in r.items() if v != "" and k != "commit"}
            )
    rows.sort(key=lambda r: r["targets"])
    if not rows:
        sys.exit("plot.py: no rows")
    width = 2 * PANEL_W
    height = PANEL_H + 30
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    svg += panel(0, "No-op build: wall time (median)", "ms", rows, "noop_ms", 1)
    svg += panel(PANEL_W, "No-op build: peak RSS (median)", "MiB", rows, "rss_kib", 1024)
    lx = width / 2 - 90
    for k, (name, colour, _) in enumerate(SERIES):
        x = lx + k * 110
        svg.append(f'<line x1="{x}" y1="{height - 12}" x2="{x + 22}" y2="{height - 12}" stroke="{colour}" stroke-width="2"/>')
        svg.append(f'<text x="{x + 28}" y="{height - 8}" font-size="12">{name}</text>')
    svg.append("</svg>")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
