#!/usr/bin/env python3
"""flood.py - connection flood: mxgate vs Postfix postscreen (issue 17).

Run by bench/run.sh (make bench) after bench.py, in the same private network
+ mount namespace.  --no-flood skips it (run.sh: and --flood-only skips
everything else).  Options of bench.py it does not know are ignored.

The figure: 2,000 new connections/s, 90% from DNSBL-listed addresses, for
20 s.  mxgate must keep its loop responsive (banner wait of an unlisted
client < 20 ms p99) and refuse the listed clients at least at the rate
Postfix postscreen does on the same machine with the same zone.

  DNS       unbound on 127.0.0.1:53: zone bl.bench, where every address of
            127.20.0.0/16 .. 127.29.0.0/16 is listed (127.0.0.2, by a
            local-zone "redirect") and every other name is NXDOMAIN
  mxgate    [dnsbl] sites = bl.bench=127.0.0.[2..11]*3, reject_threshold 3,
            decide_at = connect (the banner waits for the answer; 554 instead);
            [pregreet] enabled = no; [dns] timeout 5 s
  postscreen  Postfix with "127.0.0.1:PORT inet n - n - 1 postscreen" in front
            of smtpd: postscreen_dnsbl_sites = the same, threshold 3,
            postscreen_dnsbl_action = drop (521, disconnect), pregreet test off
            (postscreen_greet_banner empty: then postscreen waits only for
            the DNSBL answer, at most postscreen_greet_wait = 5 s),
            default_process_limit 1024 (its listen backlog, like mxgate's)
  load      bench/mxflood (C, one epoll loop): open loop at --flood-rate,
            every connection from an address of its own (so neither gateway's
            cache answers), listed clients from one /16, unlisted from another;
            an unlisted client reads the 220 and sends QUIT

Each gateway gets a smoke test first (9 listed, 1 unlisted: exactly the
listed must be refused).  Rounds are interleaved (mxgate, postscreen;
postscreen, mxgate; ...), then one 10 s run each at --flood-max-rate; every
run uses fresh /16s.  Writes RESULTS/NAME-flood.json and NAME-flood.md and
puts the same section into RESULTS/NAME.md (between the flood markers,
replaced on every run; appended when absent).
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

ZONE = "bl.bench"
LISTED_FIRST = 20        # 127.20/16 .. 127.29/16 are listed
UNLISTED_FIRST = 40      # 127.40/16 .. 127.49/16 are not
SITES = f"{ZONE}=127.0.0.[2..11]*3"
THRESHOLD = 3
MAX_SECS = 10            # seconds of each --flood-max-rate run
GREET_WAIT_S = 5         # postscreen_greet_wait = mxgate [dns] timeout
MARK_BEGIN = "<!-- flood (bench/flood.py) -->"
MARK_END = "<!-- /flood -->"


class FloodDns(benchlib.Dns):
    """The bench's unbound with the DNSBL zone: LISTED_FIRST.. /16s listed."""

    def _config(self):
        lines = [f'  local-zone: "{ZONE}." static']
        for b in range(LISTED_FIRST, LISTED_FIRST + 10):
            z = f"{b}.127.{ZONE}."
            lines += [f'  local-zone: "{z}" redirect', f"  local-data: '{z} 60 IN A 127.0.0.2'",
                      f"  local-data: '{z} 60 IN TXT \"listed by the flood bench\"'"]
        conf = super()._config()
        return conf.replace("server:\n", "server:\n" + "\n".join(lines) + "\n", 1)


class Postscreen(benchlib.Postfix):
    """The bench's private Postfix (no checks) with postscreen on its port."""

    def __init__(self, work, name, sink_port):
        super().__init__(work, name, sink_port, checks=False)
        master = (self.conf_dir / "master.cf").read_text()
        old = f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
        assert old in master, "benchlib.MASTER_CF changed: no smtpd line to replace"
        master = master.replace(
            old, f"127.0.0.1:{self.port} inet n - n - 1 postscreen\n"
                 "smtpd     pass  -       -       n       -       -       smtpd\n"
                 "dnsblog   unix  -       -       n       -       0       dnsblog\n"
                 "tlsproxy  unix  -       -       n       -       0       tlsproxy\n")
        (self.conf_dir / "master.cf").write_text(master)
        main = (self.conf_dir / "main.cf").read_text()
        # the master's listen backlog for postscreen is max(maxproc,
        # default_process_limit): 1024 here, like mxgate's listener (the
        # bench's Postfix has 400); also postscreen_pre_queue_limit
        assert "default_process_limit = 400\n" in main, "benchlib's main.cf changed"
        main = main.replace("default_process_limit = 400\n", "default_process_limit = 1024\n")
        (self.conf_dir / "main.cf").write_text(main)
        with open(self.conf_dir / "main.cf", "a") as f:
            f.write(f"postscreen_dnsbl_sites = {SITES}\n"
                    f"postscreen_dnsbl_threshold = {THRESHOLD}\n"
                    "postscreen_dnsbl_action = drop\n"
                    # no pregreet test (its teaser banner is what enables it):
                    # postscreen then waits for the DNSBL answer only
                    "postscreen_greet_banner =\n"
                    "postscreen_greet_action = ignore\n"
                    f"postscreen_greet_wait = {GREET_WAIT_S}s\n"
                    # the load's addresses are not "ours" (mynetworks is 127.0.0.254/32)
                    "postscreen_access_list = permit_mynetworks\n")


def make_mxgate(work, binary, sink_port):
    gw = benchlib.Mxgate(work, "mxgate-flood", binary, sink_port, checks=False)
    with open(gw.conf, "a") as f:
        f.write(f"""
[dnsbl]
sites = {SITES}
reject_threshold = {THRESHOLD}
decide_at = connect

[pregreet]
enabled = no
""")
    return gw


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except Exception:
        return ""


def build_mxflood(work):
    out = work / "mxflood"
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-g", "-std=c11", "-Wall", "-Wextra",
                    "-Werror", "-o", str(out), str(HERE / "mxflood.c")], check=True)
    return out


def flood(tool, port, rate, secs, listed, unlisted, pct, label, conn_timeout=10):
    cmd = [str(tool), "-p", str(port), "-r", str(rate), "-d", str(secs),
           "-l", f"127.{listed}", "-u", f"127.{unlisted}", "-U", str(pct),
           "-t", str(conn_timeout), "-L", label]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + conn_timeout + 60)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"mxflood failed ({p.returncode}): {p.stdout[-300:]} {p.stderr[-300:]}")


def machine_jiffies():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


def runq_waits(group):
    """{(pid, tid): ns} each thread of the gateway has spent runnable but
    waiting for a CPU (/proc/PID/task/TID/schedstat, second field)."""
    out = {}
    for pid in group.pids():
        for t in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                out[(pid, t.parent.name)] = int(t.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def one_run(ctx, name, gw, rate, secs, listed, unlisted, label):
    load = Path("/proc/loadavg").read_text().split()[0]
    cpu0, (busy0, tot0), rq0 = gw.group.cpu_seconds(), machine_jiffies(), runq_waits(gw.group)
    r = flood(ctx["tool"], gw.port, rate, secs, listed, unlisted, ctx["pct"], label)
    cpu, (busy1, tot1), rq1 = (gw.group.cpu_seconds() - cpu0, machine_jiffies(),
                               runq_waits(gw.group))
    # time the gateway's threads were ready to run but the busy machine ran
    # something else (threads that exited during the run are not counted)
    r["gateway_runq_wait_s"] = sum(v - rq0.get(k, 0) for k, v in rq1.items()) / 1e9
    r["loadavg_1min"] = float(load)
    # how busy both cores were over the run, with everything (the gateway,
    # the client, unbound and the other engineers' work on the machine)
    r["machine_busy_pct"] = 100.0 * (busy1 - busy0) / (tot1 - tot0) if tot1 > tot0 else None
    L, U = r["listed"], r["unlisted"]
    conns = L["n"] + U["n"]
    r.update({
        "gateway": name,
        "listed_prefix": f"127.{listed}.0.0/16", "unlisted_prefix": f"127.{unlisted}.0.0/16",
        "refused_per_s": L["refused_per_s"],
        "listed_refused_pct": 100.0 * L["refused"] / L["n"] if L["n"] else None,
        "unlisted_refused_pct": 100.0 * U["refused"] / U["n"] if U["n"] else None,
        "tempfailed": L["tempfailed"] + U["tempfailed"],
        "errors": L["errors"] + U["errors"],
        "timeouts": L["timeouts"] + U["timeouts"],
        "gateway_cpu_s": cpu,
        "gateway_cpu_ms_per_conn": cpu / conns * 1000 if conns else None,
        "gateway_cpu_pct": 100.0 * cpu / r["elapsed_s"] if r["elapsed_s"] else None,
    })
    log(f"  {label}: {r['started']} conns ({r['started_per_s']:.0f}/s, {r['late']} late), "
        f"refused {L['refused']}/{L['n']} listed = {r['refused_per_s']:.0f}/s, "
        f"unlisted served {U['served']}/{U['n']} (refused {U['refused']}), banner p50 "
        f"{U['latency']['p50_ms']:.2f} p99 {U['latency']['p99_ms']:.2f} ms, refusal p99 "
        f"{L['latency']['p99_ms']:.2f} ms, 4xx {r['tempfailed']} err {r['errors']} "
        f"timeouts {r['timeouts']}, cpu {cpu:.1f}s ({r['gateway_cpu_pct']:.0f}% of a core)"
        + (f" [{r['first_error']}]" if r["first_error"] else ""))
    return r


def smoke(ctx, name, gw, listed, unlisted):
    """10 connections (9 listed, 1 not): the gateway must refuse exactly the
    listed ones, or the comparison would mean nothing."""
    r = flood(ctx["tool"], gw.port, 10, 1, listed, unlisted, 10, f"{name}-smoke")
    L, U = r["listed"], r["unlisted"]
    if L["refused"] != L["n"] or U["served"] != U["n"] or not L["n"] or not U["n"]:
        raise RuntimeError(f"{name} smoke test: listed refused {L['refused']}/{L['n']}, "
                           f"unlisted served {U['served']}/{U['n']}: {r['first_error']}\n"
                           f"{gw.log_tail(1500)}")


def median_of(runs):
    out = {"runs": len(runs)}
    for k in ("started_per_s", "refused_per_s", "listed_refused_pct", "unlisted_refused_pct",
              "gateway_cpu_ms_per_conn", "gateway_cpu_pct", "client_cpu_s"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    for k in ("p50_ms", "p99_ms", "max_ms"):
        out["banner_" + k] = statistics.median(r["unlisted"]["latency"][k] for r in runs)
        out["refusal_" + k] = statistics.median(r["listed"]["latency"][k] for r in runs)
    for k in ("tempfailed", "errors", "timeouts", "late"):
        out[k + "_all_runs"] = sum(r[k] for r in runs)
    return out


def _f(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def markdown(res):
    m = res["machine"]
    out = [MARK_BEGIN, "## Connection flood: mxgate vs Postfix postscreen (issue 17)\n"]
    w = out.append
    w(f"Produced by `bench/flood.py` (run by `bench/run.sh`, `make bench`; "
      f"`{res['command'] or 'defaults'}`) on {m['date']} in {res['duration_s']:.0f} s, "
      f"mxgate {m['mxgate']}, Postfix {m['postfix']}; {m['cpu']}, {m['cores']} cores. "
      f"Load average at start `{m['loadavg_at_start']}`, at end `{m['loadavg_at_end']}`: "
      "the machine is shared with other engineers' builds and tests, which run meanwhile.\n")
    w(f"- Load: `bench/mxflood` (one epoll loop, C) opens {res['rate']:,} connections/s on a "
      f"fixed schedule (open loop) for {res['secs']} s, {100 - res['pct']}% from DNSBL-listed "
      f"addresses, each from an address of its own (fresh /16s in every run, so no cache of "
      "either gateway answers); a connection reads its first reply; on 220 it sends QUIT. "
      f"{res['rounds']} rounds, mxgate and postscreen interleaved (who goes first "
      "alternates). Client and gateways share "
      "the same 2 cores.")
    w(f"- Same zone, weight and threshold on both sides: unbound (local-zone `redirect`) lists "
      f"every address of the listed /16s in `{ZONE}` (127.0.0.2); sites "
      f"`{SITES}`, threshold {THRESHOLD}. mxgate: `[dnsbl] decide_at = connect` (the banner "
      "waits for the answer; a listed client gets 554 and the connection closes), "
      "`[pregreet] enabled = no`, `[dns] timeout = 5s`. postscreen: "
      "`postscreen_dnsbl_action = drop` (521, disconnect), pregreet test off "
      "(`postscreen_greet_banner =` empty, so postscreen waits only for the DNSBL answer, at "
      f"most `postscreen_greet_wait = {GREET_WAIT_S}s`, and hands a clean client to smtpd, "
      "whose 220 is the banner). With the pregreet test on, both sides would hold every new "
      "client for the greet wait (seconds) and the banner figure would measure the setting; "
      "off on both sides, it measures the loop. DNSBL lookups: mxgate's own libunbound "
      "(forwarding to the bench's unbound), postscreen's dnsblog processes (libresolv, "
      "same unbound).")
    w("- refused/s = listed connections refused (5xx) / time from the first connect to the "
      "last reply. Banner wait = connect() -> complete 220 line, unlisted clients. "
      "Refusal = connect() -> 5xx line, listed clients. The reply's arrival is the kernel's "
      "receive timestamp (SO_TIMESTAMPING), so the client's own scheduling delays on the busy "
      "machine do not count against the gateway; \"client-seen\" is the same wait as the "
      "client program saw it (those delays included). CPU = cpuacct cgroup of the gateway "
      "(mxgate; or Postfix master + postscreen + dnsblog + smtpd + every other daemon), "
      "per run; % of one core over the run. late = connections the client started > 10 ms "
      "behind its schedule. Load avg (1 min, at the start of the run), how busy both "
      "cores were over the run (everything: gateway, client, unbound, other work) and how "
      "long the gateway's threads were runnable but waiting for a CPU (schedstat) say how "
      "much of the machine the run had.\n")
    head = ("| run | gateway | offered conn/s | refused/s | listed refused | unlisted refused | "
            "banner wait p50 / p99 / max ms (unlisted) | refusal p50 / p99 ms (listed) | "
            "client-seen banner p99 ms | 4xx / errors / timeouts | gateway CPU % of a core | "
            "CPU ms / conn | gateway waited for a CPU, s | late | load avg; both cores busy |\n"
            "|---|---|---:|---:|---:|---:|---|---|---:|---|---:|---:|---:|---:|---|")

    def row(r):
        b, f = r["unlisted"]["latency"], r["listed"]["latency"]
        return (f"| {r['label']} | {r['gateway']} | {r['started_per_s']:.0f} | "
                f"{r['refused_per_s']:.0f} | {_f(r['listed_refused_pct'], '{:.2f}%')} | "
                f"{_f(r['unlisted_refused_pct'], '{:.2f}%')} | "
                f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} / {b['max_ms']:.2f} | "
                f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f} | "
                f"{r['unlisted']['client_latency']['p99_ms']:.2f} | "
                f"{r['tempfailed']} / {r['errors']} / {r['timeouts']} | "
                f"{_f(r['gateway_cpu_pct'], '{:.0f}%')} | "
                f"{_f(r['gateway_cpu_ms_per_conn'], '{:.3f}')} | "
                f"{_f(r.get('gateway_runq_wait_s'), '{:.2f}')} | {r['late']} | "
                f"{r['loadavg_1min']:.1f}; {_f(r['machine_busy_pct'], '{:.0f}%')} |")
    w(head)
    for r in res["runs"]:
        w(row(r))
    w("")
    med = res["median"]
    if med:
        w("Medians over the rounds:\n")
        w("| gateway | refused/s | listed refused | unlisted refused | banner p50 / p99 ms | "
          "refusal p50 / p99 ms | CPU % of a core | CPU ms / conn | 4xx / errors / timeouts, "
          "all runs |")
        w("|---|---:|---:|---:|---|---|---:|---:|---|")
        for name, v in med.items():
            w(f"| {name} | {_f(v['refused_per_s'], '{:.0f}')} | "
              f"{_f(v['listed_refused_pct'], '{:.2f}%')} | "
              f"{_f(v['unlisted_refused_pct'], '{:.2f}%')} | "
              f"{v['banner_p50_ms']:.2f} / {v['banner_p99_ms']:.2f} | "
              f"{v['refusal_p50_ms']:.2f} / {v['refusal_p99_ms']:.2f} | "
              f"{_f(v['gateway_cpu_pct'], '{:.0f}%')} | "
              f"{_f(v['gateway_cpu_ms_per_conn'], '{:.3f}')} | "
              f"{v['tempfailed_all_runs']} / {v['errors_all_runs']} / "
              f"{v['timeouts_all_runs']} |")
        w("")
    if res["saturation"]:
        w(f"Beyond the figure: one run per gateway at {res['max_rate']:,} connections/s for "
          f"{res['max_secs']} s, to see where each stops keeping up (refused/s below the "
          f"offered {res['max_rate'] * (100 - res['pct']) // 100:,} listed/s, growing waits, "
          "4xx or timeouts):\n")
        w(head)
        for r in res["saturation"]:
            w(row(r))
        w("")
    w("Targets (the runs at the figure's rate):\n")
    mx = [r for r in res["runs"] if r["gateway"] == "mxgate"]
    ps = [r for r in res["runs"] if r["gateway"] == "postscreen"]
    if mx:
        p99s = [r["unlisted"]["latency"]["p99_ms"] for r in mx]
        ok = sum(p < 20 for p in p99s)
        w(f"- mxgate banner wait of unlisted clients < 20 ms p99: {ok} of {len(mx)} runs "
          f"(p99 {', '.join(f'{p:.2f}' for p in p99s)} ms) -> "
          f"{'met' if ok == len(mx) else 'NOT met'}")
    if mx and ps:
        # per round: mxgate's refused/s >= postscreen's; or a tie at the
        # offered rate - both refused every listed connection, so the load
        # capped both and refused/s differs only by when the run's last reply
        # came.  No tolerance otherwise.
        verdicts = []
        for a, b in zip(mx, ps):
            x = a["refused_per_s"] / b["refused_per_s"] if b["refused_per_s"] else None
            all_a = a["listed"]["n"] and a["listed"]["refused"] == a["listed"]["n"]
            all_b = b["listed"]["n"] and b["listed"]["refused"] == b["listed"]["n"]
            if x is not None and x >= 1:
                verdicts.append((x, ">="))
            elif all_a and all_b:
                verdicts.append((x, "tie"))
            else:
                verdicts.append((x, "below"))
        ok = all(v != "below" for _, v in verdicts)
        listed = res["rate"] * (100 - res["pct"]) // 100
        w(f"- mxgate refuses listed clients at >= postscreen's rate: mxgate/postscreen "
          f"refused/s run by run "
          + ", ".join(f"{_f(x, '{:.4f}x')} ({'tie: both refused every listed client' if v == 'tie' else v})"
                      for x, v in verdicts)
          + f" -> {'met' if ok else 'NOT met'}.  A round counts when mxgate's refused/s is >= "
          f"postscreen's, or as a tie when both refused every listed connection: then the "
          f"offered load ({listed:,} listed connections/s) capped both rates, and refused/s "
          f"(refusals / first connect to last reply) differs only by when the last reply of "
          f"the {res['secs']} s run arrived.  No other tolerance.")
    if res.get("errors"):
        w("")
        for e in res["errors"]:
            w(f"- problem: `{e[:500]}`")
    w(MARK_END)
    return "\n".join(out) + "\n"


def splice(path, section):
    """Put section into the report at path: replace the old one, or append."""
    benchlib.splice(path, section, MARK_BEGIN, MARK_END)


def main():
    ap = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mxgate", default=str(HERE.parent / "build-bench" / "mxgate"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="latest")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--no-flood", action="store_true", help="skip the connection flood")
    ap.add_argument("--flood-only", action="store_true",
                    help="(run.sh) run the flood and nothing else")
    ap.add_argument("--flood-rate", type=int, default=2000, help="new connections per second")
    ap.add_argument("--flood-secs", type=int, default=20, help="seconds per run")
    ap.add_argument("--flood-rounds", type=int, default=3)
    ap.add_argument("--flood-unlisted", type=int, default=10, help="percent of unlisted clients")
    ap.add_argument("--flood-gateways", default="mxgate,postscreen")
    ap.add_argument("--flood-max-rate", type=int, default=6000,
                    help="then one run per gateway at this rate for 10 s, to see where\n"
                         "each stops keeping up (0: none)")
    args, _ = ap.parse_known_args()
    if args.no_flood:
        return
    # listed /16s: 2 per round, 2 for the saturation runs, 2 for the smoke tests
    if not 1 <= args.flood_rounds <= 3:
        ap.error("--flood-rounds: 1 to 3 (10 listed /16s in the zone)")
    for rate, secs in ((args.flood_rate, args.flood_secs), (args.flood_max_rate, MAX_SECS)):
        if rate * secs * (100 - args.flood_unlisted) / 100 > 65024:
            ap.error(f"{rate}/s for {secs} s: more listed clients than one /16 has")

    t_start = time.monotonic()
    work = Path(args.work) / "flood"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)])
    work.mkdir(parents=True)
    for d in (work.parent, work):
        os.chmod(d, 0o755)
    benchlib.setup_namespace(work)
    benchlib.cleanup_stale_groups()
    ctx = {"tool": build_mxflood(work), "pct": args.flood_unlisted}
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"), "cores": os.cpu_count(),
        "mxgate": sh(f"{args.mxgate} version") + " @ " + sh(
            f"git -C {HERE.parent} rev-parse --short HEAD"),
        "postfix": sh("postconf -d -h mail_version"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
    }
    cmd = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                   if k.startswith("flood_") and k != "flood_only"
                   and v != ap.get_default(k))
    res = {"machine": info, "rate": args.flood_rate, "secs": args.flood_secs,
           "rounds": args.flood_rounds, "pct": args.flood_unlisted, "command": cmd,
           "max_rate": args.flood_max_rate, "max_secs": MAX_SECS,
           "runs": [], "median": {}, "saturation": [], "errors": []}
    log(f"connection flood: {args.flood_rate}/s for {args.flood_secs} s, "
        f"{100 - args.flood_unlisted}% listed, {args.flood_rounds} rounds")
    dns = FloodDns(work)
    dns.start()
    sink = benchlib.Sink(work).start()
    gws = {}
    try:
        names = [n for n in args.flood_gateways.split(",") if n]
        if not names or set(names) - {"mxgate", "postscreen"}:
            raise SystemExit("--flood-gateways: mxgate and/or postscreen")
        for j, name in enumerate(names):
            gw = (make_mxgate(work, args.mxgate, sink.port) if name == "mxgate"
                  else Postscreen(work, "postscreen", sink.port))
            try:
                gw.start()
                # smoke test from the last /16s, which the rounds never use
                smoke(ctx, name, gw, LISTED_FIRST + 9 - j, UNLISTED_FIRST + 9 - j)
                gws[name] = gw
            except Exception as e:
                log(f"flood: {name} cannot run: {str(e)[:800]}")
                res["errors"].append(f"{name}: {e}")
                gw.stop()
        for i in range(args.flood_rounds):
            # ABBA: who goes first alternates, so a trend of the machine's
            # load does not always favour the same gateway
            order = list(gws.items())
            for name, gw in (order if i % 2 == 0 else order[::-1]):
                k = 2 * i + names.index(name)
                try:
                    res["runs"].append(one_run(ctx, name, gw, args.flood_rate, args.flood_secs,
                                               LISTED_FIRST + k, UNLISTED_FIRST + k,
                                               f"r{i + 1}-{name}"))
                except Exception as e:
                    log(f"flood {name} round {i + 1}: {e}")
                    res["errors"].append(f"{name} round {i + 1}: {str(e)[-800:]}")
                # let the last connections' processes and sockets settle
                time.sleep(2)
        for name, gw in (gws.items() if args.flood_max_rate else ()):
            k = 2 * args.flood_rounds + names.index(name)
            try:
                res["saturation"].append(one_run(ctx, name, gw, args.flood_max_rate, MAX_SECS,
                                                 LISTED_FIRST + k, UNLISTED_FIRST + k,
                                                 f"max-{name}"))
            except Exception as e:
                log(f"flood {name} at {args.flood_max_rate}/s: {e}")
                res["errors"].append(f"{name} at {args.flood_max_rate}/s: {str(e)[-800:]}")
            time.sleep(2)
    finally:
        for gw in gws.values():
            gw.stop()
        sink.stop()
        dns.close()
    for name in gws:
        runs = [r for r in res["runs"] if r["gateway"] == name]
        if runs:
            res["median"][name] = median_of(runs)
    res["duration_s"] = time.monotonic() - t_start
    info["loadavg_at_end"] = sh("cat /proc/loadavg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = markdown(res)
    (out / f"{args.name}-flood.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{args.name}-flood.md").write_text(section)
    splice(out / f"{args.name}.md", section)
    log(f"wrote {out / (args.name + '-flood.md')} and its section of {args.name}.md "
        f"in {res['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
