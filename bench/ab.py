#!/usr/bin/env python3
"""ab.py - A/B of two (or more) mxgate binaries, the way docs/performance.md
measured its before/after numbers.

    bench/run-ab.sh SCENARIO SESSIONS MSGS ROUNDS BIN_A BIN_B [...]
    e.g. bench/run-ab.sh a 50 16 5 /tmp/old/mxgate build-bench/mxgate

A binary written BIN+rec runs with [reports] record = yes (scenario a+rec,
issue 14), e.g. `a 50 60 10 OLD OLD+rec NEW NEW+rec`; after the rounds its
store's evaluations are counted against the messages it accepted.

Same namespace set-up, DNS, corpus and sink as bench.py; one gateway per
binary (scenario a: checks on, b: off); ROUNDS rounds, each running every
binary once in turn (interleaved, so a slow moment of the machine hits all of
them); prints the medians.  Bounded like bench.py.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402
import bench  # noqa: E402
import corpus  # noqa: E402


def main():
    if len(sys.argv) < 7 or sys.argv[1] not in ("a", "b"):
        sys.exit(__doc__)
    key, n, per, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    bins = [os.path.abspath(b[:-4]) + "+rec" if b.endswith("+rec") else os.path.abspath(b)
            for b in sys.argv[5:]]
    if not (1 <= n <= 1000 and 1 <= per <= 1000 and 1 <= rounds <= 40):
        sys.exit("sessions 1..1000, messages 1..1000, rounds 1..40")
    work = HERE / "work-ab"
    subprocess.run(["rm", "-rf", str(work)])
    work.mkdir()
    os.chmod(work, 0o755)
    benchlib.setup_namespace(work)
    benchlib.cleanup_stale_groups()
    bindir = bench.build_tools(work)
    dns = benchlib.Dns(work)
    manifest = corpus.make_corpus(work / "corpus", dns)
    dns.start()
    sink = benchlib.Sink(work).start()
    gws = []
    res = {b: [] for b in bins}
    try:
        for i, b in enumerate(bins):
            rec = b.endswith("+rec")
            gws.append(benchlib.Mxgate(work, f"gw{i}", b[:-4] if rec else b, sink.port,
                                       checks=(key == "a"),
                                       extra_conf=bench.REC_CONF if rec else "").start())
        for i in range(rounds):
            # alternate the order, so no binary always runs right after another
            order = list(zip(bins, gws))
            for b, gw in (order if i % 2 == 0 else order[::-1]):
                c0, cpu0, t0 = sink.count(), gw.group.cpu_seconds(), time.monotonic()
                r = bench.run_mxload(bindir, gw.port, n, per, manifest, "ab")
                t_deliv, _ = sink.wait_count(c0 + r["accepted"], 60)
                t_deliv = t_deliv or time.monotonic()
                res[b].append({"acc": r["accepted_per_s"], "n": r["accepted"],
                               "del": r["accepted"] / (t_deliv - t0),
                               "p50": r["latency"]["p50_ms"],
                               "cpu": (gw.group.cpu_seconds() - cpu0) / max(1, r["accepted"]) * 1000,
                               "err": r["first_error"]})
        for b in bins:
            rr = res[b]
            med = {k: statistics.median(x[k] for x in rr) for k in ("acc", "del", "p50", "cpu")}
            print(f"{b}: accepted/s {med['acc']:.0f}  delivered/s {med['del']:.0f}  "
                  f"p50 {med['p50']:.1f} ms  CPU s/1000 {med['cpu']:.2f}  "
                  f"runs {[round(x['acc']) for x in rr]}"
                  + (f"  first error: {next(x['err'] for x in rr if x['err'])}"
                     if any(x["err"] for x in rr) else ""))
        # paired change of each +rec binary against the binary listed before it
        for a, b in zip(bins, bins[1:]):
            if not b.endswith("+rec") or a.endswith("+rec"):
                continue
            for k in ("acc", "cpu"):
                ch = [(y[k] / x[k] - 1) * 100 for x, y in zip(res[a], res[b]) if x[k] > 0]
                print(f"{b} vs {a}: {k} median "
                      f"{statistics.median(ch):+.1f}% rounds "
                      + " ".join(f"{c:+.1f}" for c in ch))
        print(json.dumps({b: res[b] for b in bins}), file=open(work / "ab.json", "w"))
    finally:
        for gw in gws:
            gw.stop()
        for b, gw in zip(bins, gws):
            if b.endswith("+rec"):
                acc = sum(x.get("n", 0) for x in res[b])
                print(f"{b}: store {bench.report_rows(gw)} for {acc} messages accepted")
        sink.stop()
        dns.close()


if __name__ == "__main__":
    main()
