#!/usr/bin/env python3
"""blackhole.py - delivery scheduling under failure (issue 11): with one route
black-holed, do deliveries to a healthy route keep >= 90% of their rate?

Run by bench/run.sh (make bench) after bench.py, in the same private network
+ mount namespace.  --no-blackhole skips it (run.sh: --blackhole-only skips
everything else).  Options of bench.py it does not know are ignored.

  gateway   mxgate as bench.py's (a): SPF + DKIM + DMARC, dmarc_enforcement
            reject, fsync; accepted domains example.test and second.test;
            [route default] (example.test) -> the healthy downstream,
            [route second] (second.test); both type smtp, tls none, and
            every scheduling setting at its default - max_connections 10
            (so max_deliveries 10), dead_after 2, dead_time 60s,
            connect_timeout 30s, command_timeout 5m, msgs_per_connection
            100; [queue] max_deliveries 20
  black hole  a listener on 127.0.0.1 that accepts every connection and
            never says anything (benchlib.BlackHole): each delivery attempt
            to it holds its slot until the wait for the greeting ends -
            command_timeout (5m) in mxgate (smtp-client.c arms it once the
            TCP connect succeeds), not connect_timeout (30s), which ends an
            attempt to a port that drops SYNs: this is the harsher case.
  load      bench/mxload, 50 sessions x 60 messages of the bench's
            DKIM-signed corpus, every message once to user@example.test and
            once to user@second.test, alternating (exactly half to each)

Variants, each run on a fresh gateway (empty queue, no dead-destination
memory), interleaved in every round (the order rotates):
  base       [route second] -> a second smtp-sink (healthy): the control
  blackhole  [route second] -> the black hole
  healthy    only example.test gets mail (the same 3,000 messages, all of
             them to the healthy route), [route second] -> the black hole
and in the first --blackhole-slow-rounds rounds the same pair with a slow
healthy downstream (smtp-sink -w 1: a second before its answer to DATA, so
a delivery takes >= 1 s and the route's rate is the slots it gets, as with
a distant downstream; 10 sessions x 12 messages, mixed):
  slow-base, slow-blackhole        both routes at their defaults
  slow20-base, slow20-blackhole    the healthy route with max_connections 20
  two-base, two-blackhole          three routes at their defaults, two of them
                                   black-holed (a third of the mail each);
                                   the healthy route is given --blackhole-
                                   stall seconds (20) for its messages

The figure: the healthy route's delivered msgs/s (messages counted at its
sink / time from the start of the run until the last of them arrived) in
"blackhole" against "base" of the same round: the same sessions, messages
and mix, only the second downstream differs.  Target >= 0.90.  "healthy"
is not the control: there the healthy route gets twice the mail, and where
acceptance is the limit (2 cores for everything) its rate would double
even with a perfect scheduler; it shows what the route does at full load.

A run lasts seconds: far shorter than the greeting wait, so the black hole's
connections hang for the whole run and the dead-destination memory never
comes into play - the worst case for the slots (and the state of the
first five minutes after a downstream turns into a black hole).  Writes RESULTS/NAME-
blackhole.json and NAME-blackhole.md and puts the same section into
RESULTS/NAME.md (between the blackhole markers, replaced on every run).
"""

import argparse
import datetime
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
from benchlib import log  # noqa: E402
import bench  # noqa: E402
import corpus  # noqa: E402

SECOND_DOMAIN = "second.test"
THIRD_DOMAIN = "third.test"
MARK_BEGIN = "<!-- blackhole (bench/blackhole.py) -->"
MARK_END = "<!-- /blackhole -->"
TARGET = 0.90
# variant: (healthy downstream, the other routes' downstream, load, healthy
# route's max_connections (None: the default, 10), other routes: 1 (second)
# or 2 (second and third))
VARIANTS = {
    "base": ("sink", "sink2", "mixed", None, 1),
    "blackhole": ("sink", "blackhole", "mixed", None, 1),
    "healthy": ("sink", "blackhole", "healthy", None, 1),
    "slow-base": ("slow", "sink2", "slow", None, 1),
    "slow-blackhole": ("slow", "blackhole", "slow", None, 1),
    "slow20-base": ("slow", "sink2", "slow", 20, 1),
    "slow20-blackhole": ("slow", "blackhole", "slow", 20, 1),
    "two-base": ("sink", "sink2", "mixed3", None, 2),
    "two-blackhole": ("sink", "blackhole", "mixed3", None, 2),
}
MAIN = ("base", "blackhole", "healthy")
# (control, with the black hole, what it says)
PAIRS = (("base", "blackhole", "fast downstream, default routes: the figure"),
         ("slow-base", "slow-blackhole", "slow downstream, default routes"),
         ("slow20-base", "slow20-blackhole",
          "slow downstream, healthy route max_connections = 20"),
         ("two-base", "two-blackhole", "fast downstream, two of three routes black-holed"))
# the slow downstream: smtp-sink -w SLOW_DELAY (seconds before its answer to
# DATA), so each delivery takes >= 1 s and the route's rate is its slots
SLOW_DELAY = 1
SLOW_SESSIONS, SLOW_PER = 10, 12


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except Exception:
        return ""


def mixed_manifest(manifest, domains, name):
    """Every corpus message k times in a row: to the healthy domain, then to
    each of `domains`.  mxload takes messages (session * per_session + j) mod
    the manifest's length, i.e. consecutive entries: every k-th is healthy."""
    out = []
    for line in manifest.read_text().splitlines():
        cls, sender, rcpt, path = line.split()
        local = rcpt.split("@", 1)[0]
        out.append(f"{cls} {sender} {rcpt} {path}")
        out += [f"{cls} {sender} {local}@{d} {path}" for d in domains]
    p = manifest.with_name(name)
    p.write_text("\n".join(out) + "\n")
    return p


def make_gateway(ctx, name, healthy_port, other_port, max_conn, others=1):
    """mxgate as (a), every route with the scheduling defaults (the healthy
    one with max_connections = max_conn when given); the `others` routes
    (second, third) go to other_port."""
    doms = (SECOND_DOMAIN, THIRD_DOMAIN)[:others]
    route = "".join(f"\n[route {d.split('.')[0]}]\ndomains = {d}\ntype = smtp\n"
                    f"hosts = 127.0.0.1:{other_port}\ntls = none\n" for d in doms)
    gw = benchlib.Mxgate(ctx["work"], name, ctx["mxgate"], healthy_port, checks=True,
                         extra_conf=route, domains=(benchlib.RCPT_DOMAIN,) + doms)
    conf = gw.conf.read_text()
    old = "max_connections = 20\nmsgs_per_connection = 1000\n"
    assert old in conf, "benchlib.Mxgate's [route default] changed"
    gw.conf.write_text(conf.replace(old, f"max_connections = {max_conn}\n" if max_conn else ""))
    return gw


def one_run(ctx, variant, sessions, per, label):
    """One run of `variant` on a fresh gateway; returns its measures."""
    hname, sname, load_kind, max_conn, others = VARIANTS[variant]
    bh, sink, sink2 = ctx["blackhole"], ctx[hname], ctx[sname]
    if load_kind == "slow":
        sessions, per = SLOW_SESSIONS, SLOW_PER
    gw = make_gateway(ctx, f"mxgate-bh-{label}", sink.port, sink2.port, max_conn, others)
    try:
        gw.start()
        # one message end to end to the healthy route first (entry 0 of the
        # mixed manifest is a healthy one)
        c = sink.count()
        r = bench.run_mxload(ctx["bindir"], gw.port, 1, 1, ctx["mixed"], f"{label}-smoke")
        if r["accepted"] != 1 or sink.wait_count(c + 1, 30 + SLOW_DELAY)[0] is None:
            raise RuntimeError(f"smoke test: accepted {r['accepted']}: {r['first_error']}\n"
                               + gw.log_tail(1500))
        bh.reset_counts()
        manifest = ctx["manifest" if load_kind == "healthy" else
                       "mixed3" if load_kind == "mixed3" else "mixed"]
        n = sessions * per
        k = 1 if load_kind == "healthy" else others + 1
        want_h = (n + k - 1) // k
        want_2 = n - want_h if sname != "blackhole" else 0
        c0, c20 = sink.count(), (sink2.count() if want_2 else 0)
        cpu0 = gw.group.cpu_seconds()
        load = Path("/proc/loadavg").read_text().split()[0]
        t0 = time.monotonic()
        r = bench.run_mxload(ctx["bindir"], gw.port, sessions, per, manifest, label)
        t1 = time.monotonic()
        if r["accepted"] != r["sent"] or r["sent"] != n:
            # which messages were refused is not known: wait for what came
            log(f"  {label}: accepted {r['accepted']} of {r['sent']}: {r['first_error']}")
        # the healthy route may be starved (every slot held by black-holed
        # routes until their greeting wait ends, minutes): then its rate is
        # what it delivered within the bound
        bound = ctx["stall"] if (others > 1 and sname == "blackhole") else 120
        th, ch = sink.wait_count(c0 + want_h, timeout=bound)
        t_end = th or time.monotonic()
        t2, c2 = (sink2.wait_count(c20 + want_2, timeout=max(1.0, 120 - (time.monotonic() - t1)))
                  if want_2 else (None, c20))
        cpu = gw.group.cpu_seconds() - cpu0
        r.update({
            "variant": variant, "loadavg_1min": float(load),
            "healthy_max_connections": max_conn or 10,
            "healthy_downstream": "smtp-sink" + (f" -w {SLOW_DELAY}" if hname == "slow" else ""),
            "healthy_sent": want_h, "healthy_delivered": ch - c0,
            "healthy_delivered_per_s": (ch - c0) / (t_end - t0),
            "healthy_complete": th is not None,
            # deliveries against the pace the healthy mail came in at: 1.0
            # = the last one arrived as the client ended; takes the
            # acceptance rate (the machine's noise) out of the comparison
            "healthy_pace": ((ch - c0) / (t_end - t0)) / (want_h / r["elapsed_s"])
            if r.get("elapsed_s") else None,
            "healthy_lag_s": th - t1 if th else None,
            "second_sent": n - want_h, "second_delivered": c2 - c20,
            "second_delivered_per_s": (c2 - c20) / (t2 - t0) if t2 else None,
            "gateway_cpu_s": cpu,
            "cpu_s_per_1000": cpu / r["accepted"] * 1000 if r["accepted"] else None,
            "blackhole_accepted": bh.accepted, "blackhole_max_open": bh.max_open,
            "blackhole_open_at_end": bh.open_now(),
        })
        if th is None:
            r["problem"] = (f"only {ch - c0} of {want_h} healthy messages delivered "
                            f"within {bound:.0f} s after the client's end")
        log(f"  {label}: accepted {r['accepted']}/{r['sent']} {r['accepted_per_s']:.1f}/s, "
            f"healthy route delivered {ch - c0}/{want_h} "
            + (f"{r['healthy_delivered_per_s']:.1f}/s (last {r['healthy_lag_s']:.2f} s after "
               "the client)" if th else
               f"NOT all within {bound:.0f} s: {r['healthy_delivered_per_s']:.1f}/s")
            + (f", second route {c2 - c20}/{want_2}" if want_2 else "")
            + f", black hole {bh.accepted} connections (max open {bh.max_open}), "
            f"cpu {cpu:.2f}s, p50 {r['latency']['p50_ms']:.1f} ms"
            + (f" [{r['first_error']}]" if r["first_error"] else ""))
        return r
    finally:
        # let the hanging attempts end (EOF instead of the greeting timeout), so
        # the gateway stops at once
        bh.close_all()
        gw.stop()


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _f(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def summarize(res):
    med = {}
    for v in VARIANTS:
        runs = [r for r in res["runs"] if r["variant"] == v]
        if not runs:
            continue
        med[v] = {"runs": len(runs)}
        for k in ("accepted_per_s", "healthy_delivered_per_s", "healthy_lag_s",
                  "second_delivered_per_s", "cpu_s_per_1000", "blackhole_max_open"):
            med[v][k] = median(r.get(k) for r in runs)
        med[v]["p50_ms"] = median(r["latency"]["p50_ms"] for r in runs)
        med[v]["p99_ms"] = median(r["latency"]["p99_ms"] for r in runs)
        for k in ("rejected", "tempfailed", "errors"):
            med[v][k + "_all_runs"] = sum(r.get(k) or 0 for r in runs)
    res["median"] = med
    res["pairs"] = []
    for base, var, what in PAIRS:
        ratios, paces = [], []
        for i in range(res["rounds"]):
            rr = {r["variant"]: r for r in res["runs"] if r["round"] == i + 1}
            b, h = rr.get(base), rr.get(var)
            if b and h and b.get("healthy_delivered_per_s") and h.get("healthy_delivered_per_s"):
                ratios.append(h["healthy_delivered_per_s"] / b["healthy_delivered_per_s"])
                if b.get("healthy_pace") and h.get("healthy_pace") is not None:
                    paces.append(h["healthy_pace"] / b["healthy_pace"])
        if ratios:
            res["pairs"].append({"base": base, "variant": var, "what": what,
                                 "ratios": ratios, "median": median(ratios),
                                 "pace_ratios": paces, "pace_median": median(paces)})
    res["ratio_median"] = res["pairs"][0]["median"] if (
        res["pairs"] and res["pairs"][0]["base"] == "base") else None


def markdown(res):
    m = res["machine"]
    out = []
    w = out.append
    w(MARK_BEGIN)
    w("## Delivery scheduling under failure: one route black-holed (issue 11)\n")
    w(f"Produced by `bench/blackhole.py` (run by `bench/run.sh`, `make bench`"
      f"{'; ' + res['command'] if res['command'] else ''}) on {m['date']} in "
      f"{res['duration_s']:.0f} s, mxgate {m['mxgate']}; {m['cpu']}, {m['cores']} cores. Load "
      f"average at start `{m['loadavg_at_start']}`, at end `{m['loadavg_at_end']}`: the machine "
      "is shared with other engineers' builds and tests, which run meanwhile; the load "
      "generator, the gateway and the sinks share its cores.\n")
    w(f"- Gateway: mxgate as (a) (SPF, DKIM, DMARC `p=reject` enforced, fsync before 250) with "
      f"two inbound routes by recipient domain, `type = smtp`, `tls = none`: `[route default]` "
      f"for example.test -> the healthy downstream, `[route second]` for {SECOND_DOMAIN}. "
      "Every scheduling setting is the default a postmaster gets: `max_connections` 10 per "
      "route (so `max_deliveries` 10), `dead_after` 2, `dead_time` 60s, `connect_timeout` "
      "30s, `command_timeout` 5m, `[queue] max_deliveries` 20 - except in the *slow20* pair, "
      "where the healthy route has `max_connections = 20` (as the bench's (a) has).")
    w("- Black hole: a listener on 127.0.0.1 that accepts every connection and never says "
      "anything (no greeting, never reads, never closes). A delivery attempt to it holds its "
      "slot until mxgate stops waiting for the greeting: `command_timeout` (5 min; "
      "smtp-client.c arms it when the TCP connect succeeds - the config reference says "
      "`connect_timeout` covers the greeting, the code does not). A port that drops SYNs "
      "would end at `connect_timeout` (30 s): accept-and-silence is the harsher case.")
    w(f"- Load: `bench/mxload`, {res['sessions']} sessions x {res['per_session']} messages of "
      "the bench's DKIM-signed corpus; in the mixed runs every message goes once to "
      f"example.test and once to {SECOND_DOMAIN}, alternating: exactly half to each route. "
      f"Slow pairs: {SLOW_SESSIONS} sessions x {SLOW_PER} messages, mixed the same way.")
    w("- Variants, each on a fresh gateway (empty queue, no memory of dead destinations), "
      f"interleaved in {res['rounds']} rounds (the order rotates; the slow pairs in the first "
      f"{min(res['rounds'], res['slow_rounds'])}): **base** = the healthy "
      "downstream is smtp-sink and the second route goes to a second smtp-sink (healthy; the "
      "control); **blackhole** = the second route goes to the black hole; **healthy** = all "
      "messages to example.test (the second route, black-holed, gets none); **slow-base**, "
      f"**slow-blackhole** = the same pair with a slow healthy downstream (`smtp-sink -w "
      f"{SLOW_DELAY}`: {SLOW_DELAY} s before its answer to DATA, so a delivery takes >= 1 s "
      "and the route's rate is the number of slots it gets, as with a distant downstream); "
      "**slow20-base**, **slow20-blackhole** = that pair with the healthy route's "
      "`max_connections = 20`; **two-base**, **two-blackhole** = three routes at their "
      "defaults (a third of the mail each, fast downstream), two of them to a second sink or "
      f"black-holed; there the healthy route's rate counts what arrived within "
      f"{res['stall']:.0f} s after the client's end (its messages may wait for minutes).")
    w("- Healthy route delivered msg/s = messages counted at its sink / time from the start of "
      "the run until the last of them arrived; lag = how long after the client's last 250 that "
      "was (~0: deliveries kept pace with acceptance); pace = that rate / the rate the "
      "client handed the healthy route's messages over (1.0: the last delivery came as the "
      "client ended) - a ratio of paces takes each run's acceptance rate, i.e. most of the "
      "shared machine's noise, out of the comparison. Every run is far shorter than the "
      "greeting wait: the black hole's connections hang for the whole run and the "
      "dead-destination memory (`dead_after`) never starts - the worst case for the slots, "
      "and what the first 5 minutes after a downstream turns into a black hole look like.")
    w("- The figure compares *blackhole* with *base* of the same round: the same sessions, "
      "messages and mix, only the second downstream differs. *Healthy* is not the "
      "control: there the healthy route gets twice the mail in the same run, so where "
      "acceptance is the limit its rate doubles whatever the scheduler does; it shows the "
      "route at full load. With the fast sink on loopback, deliveries keep pace with "
      "acceptance (lag ~0), so that pair shows whether the black hole stalls or slows the "
      "healthy route at all; the slow pairs show what its slots cost when the healthy "
      "route's rate is its concurrency.\n")
    w("| run | variant | accepted msg/s | healthy route: delivered msg/s | lag s | pace | other route(s): "
      "delivered msg/s | black hole: connections (most open at once) | CPU s / 1000 msgs | "
      "latency p50 / p99 ms | 4xx / 5xx / errors | load avg |")
    w("|---|---|---:|---:|---:|---:|---:|---|---:|---|---|---:|")
    for r in res["runs"]:
        sec = ("-" if not r["second_delivered"] else
               f"{_f(r.get('second_delivered_per_s'))} ({r['second_delivered']}/{r['second_sent']})")
        bh = ("-" if VARIANTS[r["variant"]][1] != "blackhole" else
              f"{r['blackhole_accepted']} ({r['blackhole_max_open']})")
        w(f"| r{r['round']} | {r['variant']} | {r['accepted_per_s']:.0f} | "
          f"{_f(r.get('healthy_delivered_per_s'), '{:.0f}' if r.get('healthy_complete', True) else '{:.1f}')} "
          f"({r['healthy_delivered']}/{r['healthy_sent']}"
          f"{'' if r.get('healthy_complete', True) else ', then stopped waiting'}) | "
          f"{_f(r.get('healthy_lag_s'), '{:.2f}') if r.get('healthy_complete', True) else '> ' + format(res['stall'], '.0f')} | "
          f"{_f(r.get('healthy_pace'), '{:.2f}')} | "
          f"{sec} | {bh} | {_f(r.get('cpu_s_per_1000'), '{:.2f}')} | "
          f"{r['latency']['p50_ms']:.1f} / {r['latency']['p99_ms']:.1f} | "
          f"{r.get('tempfailed', 0)} / {r.get('rejected', 0)} / "
          f"{max(0, r.get('errors', 0) - r.get('tempfailed', 0) - r.get('rejected', 0))} | "
          f"{r['loadavg_1min']:.1f} |")
    w("")
    med = res.get("median") or {}
    if med:
        w("Medians over the rounds:\n")
        w("| variant | runs | accepted msg/s | healthy route: delivered msg/s | lag s | "
          "CPU s / 1000 msgs | latency p50 / p99 ms |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for v, x in med.items():
            w(f"| {v} | {x['runs']} | {_f(x['accepted_per_s'], '{:.0f}')} | "
              f"{_f(x['healthy_delivered_per_s'], '{:.0f}')} | {_f(x['healthy_lag_s'], '{:.2f}')} | "
              f"{_f(x['cpu_s_per_1000'], '{:.2f}')} | {_f(x['p50_ms'])} / {_f(x['p99_ms'])} |")
        w("")
    w("Target and pairs (the healthy route's delivered msg/s with the second route "
      "black-holed / with it healthy, same round):\n")
    for pr in res.get("pairs") or []:
        rs = pr["ratios"]
        verdict = ("met" if pr["median"] >= TARGET else "NOT met")
        ps = pr.get("pace_ratios") or []
        w(f"- {pr['what']} ({pr['variant']} / {pr['base']}): {pr['median']:.2f}x (median of "
          f"{len(rs)} rounds; run by run {', '.join(f'{x:.2f}x' for x in rs)}) -> "
          + (f"**{verdict}** (target >= {TARGET:.2f}x)" if pr["base"] == "base"
             else f"{'>=' if pr['median'] >= TARGET else '<'} {TARGET:.2f}x")
          # (with the slow downstream the pace only says how fast the
          # client was: no use there)
          + (f"; against each run's own acceptance pace: {pr['pace_median']:.2f}x "
             f"({', '.join(f'{x:.2f}x' for x in ps)})"
             if ps and VARIANTS[pr["base"]][2] != "slow" else ""))
    if res.get("ratio_median") is None:
        w("- the figure (blackhole / base): not measured")
    bmax = [r["blackhole_max_open"] for r in res["runs"] if r["variant"] == "blackhole"]
    if bmax:
        w(f"- the black-holed route held at most {max(bmax)} connections at once "
          "(its `max_connections`, default 10): the healthy route had the other 10 of "
          "`[queue] max_deliveries` (20)")
    for e in res.get("errors") or []:
        w(f"- problem: `{e[:500]}`")
    for r in res["runs"]:
        if r.get("problem"):
            w(f"- problem in r{r['round']} {r['variant']}: {r['problem']}")
    w(MARK_END)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mxgate", default=str(HERE.parent / "build-bench" / "mxgate"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="latest")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--no-blackhole", action="store_true",
                    help="skip the black-holed route scenario")
    ap.add_argument("--blackhole-only", action="store_true",
                    help="(run.sh) run this scenario and nothing else")
    ap.add_argument("--blackhole-rounds", type=int, default=5,
                    help="rounds of base, blackhole, healthy")
    ap.add_argument("--blackhole-slow-rounds", type=int, default=2,
                    help="of those, how many also run the slow pairs (a delivery takes\n"
                         ">= 1 s there: they vary little, and take ~30 s a round)")
    ap.add_argument("--blackhole-stall", type=float, default=20,
                    help="seconds after the client's end the healthy route is given when\n"
                         "two routes are black-holed (they can hold every slot for minutes)")
    ap.add_argument("--blackhole-sessions", type=int, default=50)
    ap.add_argument("--blackhole-msgs", type=int, default=60, help="messages per session")
    args, _ = ap.parse_known_args()
    if args.no_blackhole:
        return
    if not (1 <= args.blackhole_rounds <= 20 and 0 <= args.blackhole_slow_rounds <= 20
            and 1 <= args.blackhole_sessions <= 500 and 1 <= args.blackhole_msgs <= 1000):
        ap.error("rounds 1..20, slow rounds 0..20, sessions 1..500, messages 1..1000")

    t_start = time.monotonic()
    work = Path(args.work) / "blackhole"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)])
    work.mkdir(parents=True)
    for d in (work.parent, work):
        os.chmod(d, 0o755)
    benchlib.setup_namespace(work)
    benchlib.cleanup_stale_groups()
    ctx = {"work": work, "mxgate": args.mxgate, "bindir": bench.build_tools(work),
           "stall": max(1.0, min(args.blackhole_stall, 300.0))}
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"), "cores": os.cpu_count(),
        "mxgate": sh(f"{args.mxgate} version") + " @ " + sh(
            f"git -C {HERE.parent} rev-parse --short HEAD") + (
            " (+ uncommitted changes)" if sh(f"git -C {HERE.parent} status --porcelain -- . ':!bench/results'") else ""),
        "loadavg_at_start": sh("cat /proc/loadavg"),
    }
    cmd = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                   if k.startswith("blackhole_") and k != "blackhole_only"
                   and v != ap.get_default(k))
    res = {"machine": info, "rounds": args.blackhole_rounds, "stall": ctx["stall"],
           "slow_rounds": args.blackhole_slow_rounds, "sessions": args.blackhole_sessions,
           "per_session": args.blackhole_msgs, "command": cmd, "runs": [], "errors": []}
    log(f"black-holed route: {args.blackhole_rounds} rounds of {', '.join(VARIANTS)}; "
        f"{args.blackhole_sessions} sessions x {args.blackhole_msgs} messages (slow: "
        f"{SLOW_SESSIONS} x {SLOW_PER})")
    dns = benchlib.Dns(work)
    ctx["manifest"] = corpus.make_corpus(work / "corpus", dns)
    ctx["mixed"] = mixed_manifest(ctx["manifest"], (SECOND_DOMAIN,), "manifest-mixed")
    ctx["mixed3"] = mixed_manifest(ctx["manifest"], (SECOND_DOMAIN, THIRD_DOMAIN),
                                   "manifest-mixed3")
    dns.start()
    ctx["sink"] = benchlib.Sink(work).start()
    ctx["sink2"] = benchlib.Sink(work, "sink2").start()
    ctx["slow"] = benchlib.Sink(work, "sink-slow", data_delay=SLOW_DELAY).start()
    ctx["blackhole"] = benchlib.BlackHole().start()
    try:
        for i in range(args.blackhole_rounds):
            # the order rotates (main three) or flips (the slow pairs) every
            # round, so no variant always runs right after another
            order = list(MAIN[i % 3:] + MAIN[:i % 3])
            for base, var, _ in (PAIRS[1:] if i < args.blackhole_slow_rounds else ()):
                order += [base, var] if i % 2 == 0 else [var, base]
            for v in order:
                label = f"r{i + 1}-{v}"
                try:
                    r = one_run(ctx, v, args.blackhole_sessions, args.blackhole_msgs, label)
                    r["round"] = i + 1
                    res["runs"].append(r)
                except Exception as e:
                    log(f"blackhole {label}: {e}")
                    res["errors"].append(f"{label}: {str(e)[-800:]}")
    finally:
        ctx["blackhole"].stop()
        ctx["slow"].stop()
        ctx["sink2"].stop()
        ctx["sink"].stop()
        dns.close()
    summarize(res)
    res["duration_s"] = time.monotonic() - t_start
    info["loadavg_at_end"] = sh("cat /proc/loadavg")
    for pr in res["pairs"]:
        log(f"healthy route with the other black-holed, {pr['what']}: {pr['median']:.2f}x "
            f"(rounds {', '.join(f'{x:.2f}' for x in pr['ratios'])}; target >= {TARGET})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = markdown(res)
    (out / f"{args.name}-blackhole.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{args.name}-blackhole.md").write_text(section)
    benchlib.splice(out / f"{args.name}.md", section, MARK_BEGIN, MARK_END)
    log(f"wrote {out / (args.name + '-blackhole.md')} and its section of {args.name}.md "
        f"in {res['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
