"""Sums the time per operator in Chrome traces written by `sdstudio-bench --trace` and
`diffusers_bench.py --trace`, and prints them side by side, largest first.

usage: trace_ops.py OURS.json THEIRS.json [--top 25]

Times are inclusive (an op that calls another counts both), so compare row by row, not the sum.
"""
import argparse
import collections
import json


def totals(path):
    with open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    out = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") == "X" and e.get("cat", "cpu_op") in ("cpu_op", "Operator", "") \
                and e["name"].startswith("aten::"):
            out[e["name"]][0] += float(e.get("dur", 0)) / 1e3
            out[e["name"]][1] += 1
        elif e.get("ph") in ("B", "E") and e["name"].startswith("aten::"):
            # The legacy profiler writes begin/end pairs.
            t = float(e["ts"]) / 1e3
            out[e["name"]][0] += t if e["ph"] == "E" else -t
            out[e["name"]][1] += e["ph"] == "B"
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ours")
    p.add_argument("theirs")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    ours, theirs = totals(a.ours), totals(a.theirs)
    names = sorted(set(ours) | set(theirs),
                   key=lambda n: -max(ours.get(n, [0])[0], theirs.get(n, [0])[0]))
    print(f"{'operator':40s} {'ours ms':>10s} {'n':>5s} {'theirs ms':>10s} {'n':>5s} {'ratio':>6s}")
    for n in names[:a.top]:
        o, t = ours.get(n, [0.0, 0]), theirs.get(n, [0.0, 0])
        ratio = f"{o[0] / t[0]:6.2f}" if t[0] else "     -"
        print(f"{n:40s} {o[0]:10.1f} {o[1]:5d} {t[0]:10.1f} {t[1]:5d} {ratio}")


if __name__ == "__main__":
    main()
