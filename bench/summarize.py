#!/usr/bin/env python3
"""Reads bench/compare's JSON reports (NAME.SERVER.REP.json) and prints medians and Comet/peer
ratios as Markdown. Usage: bench/summarize.py DIR"""
import glob
import json
import os
import statistics
import sys

# (label, path into the report, True when higher is better, None when neither is: a long-poll
# server that returns more messages per request needs fewer requests for the same deliveries;
# see also `sense`)
METRICS = {
    "S1": [("RSS B/conn", ("server_use", "rss_per_connection_bytes"), False),
           ("connected", ("connected",), True)],
    "S2": [("deliveries/s", ("deliveries_per_sec",), True),
           ("publishes/s achieved", ("publishes_per_sec",), True),
           ("p50 ms", ("latency_ms", "p50"), False),
           ("p90 ms", ("latency_ms", "p90"), False),
           ("p99 ms", ("latency_ms", "p99"), False),
           ("p99.9 ms", ("latency_ms", "p999"), False),
           ("max ms", ("latency_ms", "max"), False),
           ("CPU s/M deliveries", ("server_use", "cpu_secs_per_million"), False)],
    "S4": [("poll requests/s", ("poll_requests_per_sec",), None),
           ("deliveries/s", ("deliveries_per_sec",), True),
           ("publishes/s achieved", ("publishes_per_sec",), True),
           ("p50 ms", ("latency_ms", "p50"), False),
           ("p99 ms", ("latency_ms", "p99"), False),
           ("CPU s/M deliveries", ("server_use", "cpu_secs_per_million"), False)],
    "S5": [("s to all subscribed", ("connect_secs",), False),
           ("connects/s", ("connects_per_sec",), True),
           ("connected", ("connected",), True)],
    "S6": [("delivered %", ("delivered_pct",), True),
           ("lost", ("lost",), False),
           ("duplicated", ("duplicated",), False),
           ("s to all resumed", ("resume_secs",), False),
           ("resumed", ("resumed",), True),
           ("publishes/s achieved", ("publishes_per_sec",), True),
           ("CPU s/M deliveries", ("server_use", "cpu_secs_per_million"), False),
           ("RSS peak KiB", ("server_use", "rss_peak_kib"), False)],
}
METRICS["S3"] = METRICS["S2"]


def sense(name, path, higher):
    """At `--rate max` each server publishes as fast as it takes publishes in, so each one's
    latency is measured at its own rate: compare throughput there, not latency."""
    if name.endswith("-max") and path[0] == "latency_ms":
        return None
    return higher


def get(report, path):
    if path == ("delivered_pct",):
        expected = report.get("published", 0) * report.get("connected", 0)
        return 100.0 * report.get("delivered", 0) / expected if expected else None
    if path == ("publishes_per_sec",):
        secs = report.get("publish_secs") or 0
        return report.get("published", 0) / secs if secs else None
    v = report
    for k in path:
        if not isinstance(v, dict) or v.get(k) is None:
            return None
        v = v[k]
    return v


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def main(d):
    runs = {}
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        name, server, rep = os.path.basename(path)[:-5].rsplit(".", 2)
        with open(path) as f:
            runs.setdefault(name, {}).setdefault(server, []).append(json.load(f))
    servers = ["comet", "nchan", "pushpin"]
    peers = [s for s in servers[1:] if any(s in v for v in runs.values())]
    print("| case | metric | " + " | ".join(s for s in servers if s == "comet" or s in peers)
          + " | " + " | ".join(f"comet/{p}" for p in peers) + " |")
    print("|---|---|" + "---|" * (1 + 2 * len(peers)))
    integrity = []
    for name in sorted(runs):
        for label, path, higher in METRICS.get(name[:2], []):
            higher = sense(name, path, higher)
            med = {}
            for s in servers:
                vals = [get(r, path) for r in runs[name].get(s, [])]
                vals = [v for v in vals if v is not None]
                med[s] = statistics.median(vals) if vals else None
            ratios = []
            for p in peers:
                c, v = med.get("comet"), med.get(p)
                if c is None or v in (None, 0):
                    ratios.append("-")
                else:
                    r = c / v
                    if higher is None:
                        verdict = ""
                    elif abs(r - 1) < 0.005:
                        verdict = "(even)"
                    else:
                        verdict = "(ahead)" if (r > 1) == higher else "(behind)"
                    ratios.append(f"{r:.2f} {verdict}".rstrip())
            cols = [fmt(med.get(s)) for s in ["comet"] + peers]
            how = "informational" if higher is None else f"{'higher' if higher else 'lower'} is better"
            print(f"| {name} | {label} ({how}) | " + " | ".join(cols)
                  + " | " + " | ".join(ratios) + " |")
        for s, reps in runs[name].items():
            lost = sum(r.get("lost", 0) for r in reps)
            dup = sum(r.get("duplicated", 0) for r in reps)
            errs = {}
            for r in reps:
                for k, v in list(r.get("connect_errors", {}).items()) + list(r.get("run_errors", {}).items()):
                    errs[k] = errs.get(k, 0) + v
            pub_err = sum(r.get("publish_errors", 0) for r in reps)
            unanswered = sum(r.get("publishes_unanswered", 0) for r in reps)
            integrity.append((name, s, len(reps), lost, dup, errs, pub_err, unanswered))
    print()
    print("Integrity (summed over repetitions): lost and duplicated messages must be 0.")
    print()
    print("| case | server | runs | lost | duplicated | connection errors | publish errors | publishes unanswered at the end |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, n, lost, dup, errs, pub_err, unanswered in integrity:
        e = ", ".join(f"{k}: {v}" for k, v in sorted(errs.items())) or "0"
        print(f"| {name} | {s} | {n} | {lost} | {dup} | {e} | {pub_err} | {unanswered} |")


if __name__ == "__main__":
    main(sys.argv[1])
