"""Pairs of A/B runs (ab.sh's A<i>/ and B<i>/ output dirs): each run's rate at a quantile of
its 10 ms bins (default the 90th percentile: its pace in its fastest stretches), the ratio
B/A per pair, and the median of the ratios; the whole-run rates' ratios beside them."""
import json
import statistics
import sys


def bin_rate(run, q):
    s = json.loads(open(run + "/samples.jsonl").readline())["sample"]
    rates = sorted(b["packets"] / 0.01 for b in s["timeline"])
    return rates[int(q * (len(rates) - 1))], s["pps"]


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    q = float(sys.argv[3]) if len(sys.argv) > 3 else 0.9
    binned, whole = [], []
    for i in range(1, n + 1):
        a, am = bin_rate(f"{d}/A{i}", q)
        b, bm = bin_rate(f"{d}/B{i}", q)
        binned.append(b / a)
        whole.append(bm / am)
        print(f"{i} A p{int(q * 100)}={a / 1e6:.1f} B={b / 1e6:.1f} ratio={b / a:.3f}"
              f"  (mean-rate ratio {bm / am:.3f})")
    print("median p-ratio", round(statistics.median(binned), 3),
          "median mean-ratio", round(statistics.median(whole), 3))


main()
