"""report - bench/results/*.md from the JSON results of bench.py.

markdown(res) is the report of one bench.py run; appendix(out_dir, name) is
what NAME.md keeps across such runs: the sections the other scripts splice
into it (bench/blackhole.py, bench/flood.py - taken from their own
NAME-blackhole.md and NAME-flood.md, so a bench.py run alone does not drop
them) and an index of the other result files in the directory (ab.md,
recording.md, ...: kept by hand, never regenerated), with their section
titles.  `python3 bench/report.py results/latest.json` writes latest.md
again from its JSON (after a change to this file).
"""

import json
import os
import sys
from pathlib import Path

# sections other scripts splice into NAME.md (their own NAME-SUFFIX.md holds
# the same text, between these markers), in the order they appear
KEPT = (("blackhole", "<!-- blackhole (bench/blackhole.py) -->", "<!-- /blackhole -->"),
        ("flood", "<!-- flood (bench/flood.py) -->", "<!-- /flood -->"))
# the index stays last: benchlib.splice() puts a missing section before it
INDEX_MARK = "<!-- results index (bench/report.py) -->"


def _f(v, fmt="{:.1f}", none="-"):
    return none if v is None else fmt.format(v)


def _ratio(x, y):
    if x is None or not y:
        return None
    return x / y


def _level(res, key, n):
    s = res["scenarios"].get(key)
    if not s:
        return None
    return s.get("levels", {}).get(str(n))


def markdown(res):
    m = res["machine"]
    out = []
    w = out.append
    w("# mxgate benchmark results\n")
    cmd = res.get("command", "")
    w(f"Produced by `bench/run.sh{(' ' + cmd) if cmd else ''}` (`make bench`) on {m['date']}, "
      f"in {res['duration_s']:.0f} s. "
      "Absolute numbers on a shared 2-core machine are noise; read the ratios, which come from "
      "one run on one machine. The load average below says how busy the machine was "
      "with other work meanwhile.\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for k in ("cpu", "cores", "memory", "kernel", "os", "disk", "loadavg_at_start",
              "loadavg_at_end", "mxgate",
              "postfix", "opendkim", "opendmarc", "policyd_spf", "unbound", "openssl",
              "rspamd", "clamd", "clamav_milter"):
        if k in m:
            w(f"| {k} | {m.get(k, '')} |")
    w("")
    w("## Method\n")
    ps = res["per_session"]
    w("- Everything runs in a private network namespace on its own loopback: unbound "
      "(local-data: SPF, DKIM and DMARC `p=reject` records of the corpus' four sender domains) "
      "on 127.0.0.1:53, smtp-sink as the downstream, the gateway under test, the load "
      "generator. Load generator and gateway share the same 2 cores.")
    w("- Load: `bench/mxload` replays a corpus of DKIM-signed messages (2048-bit RSA keys made "
      "at bench time, relaxed/relaxed) - round robin over 14 x 4 KiB, 5 x 40 KiB, 1 x 1 MiB - "
      "with a fixed number of concurrent sessions, each sending a fixed number of messages "
      "(MAIL/RCPT/DATA pipelined when offered). Latency = last byte of the final dot written "
      "-> 250 read.")
    w(f"- Messages per session (reduced to keep `make bench` under 20 minutes): "
      + ", ".join(f"{n} sessions x {k}" for n, k in ps.items())
      + f"; median of {res['runs']} runs per cell.")
    w("- accepted/s = accepted messages / client wall time. delivered/s = messages counted by "
      "smtp-sink / time from the start of the run until the last one arrived. CPU = cpuacct "
      "cgroup of the gateway's whole process tree (mxgate; or Postfix master + all its "
      "daemons + milters + policy server), per 1,000 accepted messages, including delivery. "
      "Peak memory = highest sum over that tree sampled every 0.2 s: RSS and PSS (PSS "
      "counts shared pages once, which is the fair number for Postfix's many processes).")
    w("- Both gateways fsync before 250, relay to the same sink with up to 20 connections, and "
      "log at info level to a file.")
    if any(k in res["scenarios"] for k in ("a+scan", "c+scan", "a+rec")):
        w("- Inspection and recording (issues 13, 14) at 50 sessions only, in the same "
          "interleaved rounds: (a+scan) = (a) + `[clamav]` + `[rspamd]`, both `on_failure = "
          "tempfail`; (c+scan) = (c) + clamav-milter (`OnFail Defer`) + rspamd's proxy worker "
          "(`milter = yes`), `milter_default_action = tempfail`. Both use the same rspamd "
          "(Debian's rules + deploy/rspamd/mxgate.lua, no network modules, PCRE; the proxy "
          "forwards to the normal worker mxgate talks to, as Debian's default worker-proxy.inc "
          "does) and the same clamd (a local signature DB with an EICAR test signature). "
          "rspamd and clamd run in a cgroup of their own; its CPU during a run is counted for "
          "the gateway measured in that run (runs are sequential, so only that one uses them), "
          "and reported apart and in a total. (a+rec) = (a) + `[reports] record = yes` "
          "(SQLite in the queue dir, WAL), which runs further rounds paired with (a) only.")
    w("")

    fp = res.get("fsprobe") or {}
    w("## Physical limit: one durable commit\n")
    if "p50_ms" in fp:
        w(f"`bench/fsprobe`: create (O_EXCL) + write 4 KiB + fsync + rename + fsync(dir), "
          f"{fp['commits']} times on the bench's file system: p50 **{fp['p50_ms']:.3f} ms**, "
          f"p95 {fp['p95_ms']:.3f} ms, p99 {fp['p99_ms']:.3f} ms, i.e. "
          f"**{fp['commits_per_s_one_writer']:.0f} commits/s** for one writer without group "
          "commit. The tables below show how close durable acceptance gets to it "
          "(mxgate's 1-session p50 latency vs. this p50; its many-session rate vs. this rate).\n")
    else:
        w(f"fsprobe failed: {fp}\n")

    ver = [(k, s["verify"]) for k, s in res["scenarios"].items() if s.get("verify")]
    if ver:
        w("## The checks really ran\n")
        w("Before the measured runs, the whole corpus went once through each checking gateway "
          "to a sink that kept the messages; the gateway's own Authentication-Results / "
          "Received-SPF headers said:\n")
        w("| scenario | messages | spf=pass | dkim=pass | dmarc=pass |")
        w("|---|---:|---:|---:|---:|")
        for k, v in ver:
            w(f"| ({k}) | {v.get('messages')} | {v.get('spf=pass')} | {v.get('dkim=pass')} | "
              f"{v.get('dmarc=pass')} |")
        w("")
        sv = [(k, v) for k, v in ver if "spam_checked" in v]
        if sv:
            w("Inspection: the same corpus, then one EICAR and one GTUBE message (unsigned, "
              "from the SPF-only domain, so no authentication check refuses them). rspamd: "
              "messages whose X-Spam-Status names `scanner=rspamd` (mxgate; with rspamd down "
              "its own status stays, without it), an X-Spam-Status that is not `unchecked` "
              "(rspamd's milter_headers for Postfix). clamd: mxgate's `X-Virus-Scan: clean`; "
              "clamav-milter's `X-Virus-Status: Clean`.\n")
            w("| scenario | messages | rspamd checked | clamd scanned | EICAR | GTUBE |")
            w("|---|---:|---:|---:|---|---|")
            for k, v in sv:
                w(f"| ({k}) | {v.get('messages')} | {v.get('spam_checked')} | "
                  f"{v.get('virus_checked')} | {v.get('eicar_reply', '-')[:70]} | "
                  f"{v.get('gtube_reply', '-')[:70]} |")
            w("")
        rv = [(k, v) for k, v in ver if "recorded" in v or ("error" in v and k == "a+rec")]
        for k, v in rv:
            w(f"Recording: after the corpus went through ({k}), its report store held "
              f"{v.get('recorded', '-')} evaluations ({v.get('dropped', '-')} dropped)"
              + (f"; {v['error']}" if v.get("error") else "") + ".\n")

    w("## Throughput, CPU and memory\n")
    w("| scenario | sessions | accepted msg/s | delivered msg/s | CPU s / 1000 msgs | "
      "peak RSS MiB | peak PSS MiB | latency p50 / p95 / p99 ms | 4xx / 5xx / other errors, all runs |")
    w("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for key, s in res["scenarios"].items():
        if s.get("error") and not s.get("levels"):
            w(f"| ({key}) {s['name']} | - | failed: {s['error'][:200].splitlines()[0]} "
              "| | | | | | |")
            continue
        for n, lv in s["levels"].items():
            lat = lv["latency"]
            w(f"| ({key}) {s['name']} | {n} | {_f(lv['accepted_per_s'])} | "
              f"{_f(lv['delivered_per_s'])} | {_f(lv['cpu_s_per_1000'], '{:.2f}')} | "
              f"{_f(lv['peak_rss_mib'], '{:.0f}')} | {_f(lv['peak_pss_mib'], '{:.0f}')} | "
              f"{lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f} | "
              f"{lv.get('tempfailed_all_runs', 0)} / {lv.get('rejected_all_runs', 0)} / "
              f"{max(0, lv.get('errors_all_runs', 0) - lv.get('tempfailed_all_runs', 0) - lv.get('rejected_all_runs', 0))} |")
        if s.get("error"):
            w(f"| ({key}) | | stopped early: {s['error'][:200].splitlines()[0]} | | | | | | |")
    firsts = [(k, lv["first_error"], n) for k, s in res["scenarios"].items()
              for n, lv in s.get("levels", {}).items() if lv.get("first_error")]
    if firsts:
        w("")
        w("First problem seen per cell: " + "; ".join(f"({k}) {n} sessions: `{e[:120]}`"
                                                      for k, e, n in firsts))
    w("")

    w("### Latency by message size (p50 / p99 ms)\n")
    sizes = ["4k", "40k", "1m"]
    w("| scenario | sessions | " + " | ".join(sizes) + " |")
    w("|---|---:|" + "---|" * len(sizes))
    for key, s in res["scenarios"].items():
        for n, lv in s.get("levels", {}).items():
            cells = []
            for c in sizes:
                bc = (lv.get("by_class") or {}).get(c) or {}
                cells.append(f"{_f(bc.get('p50_ms'))} / {_f(bc.get('p99_ms'))}")
            w(f"| ({key}) | {n} | " + " | ".join(cells) + " |")
    w("")

    w("## Ratios (mxgate / Postfix, same run)\n")
    w("| sessions | delivered (a)/(c) | delivered (a)/(d) | delivered (b)/(d) | "
      "CPU per msg (a)/(c) | CPU per msg (b)/(d) | peak PSS (a)/(c) |")
    w("|---:|---:|---:|---:|---:|---:|---:|")
    levels = sorted({int(n) for s in res["scenarios"].values() for n in s.get("levels", {})})
    for n in levels:
        a, b, c, d = (_level(res, k, n) for k in "abcd")

        def r(x, y, k):
            return _f(_ratio(x and x.get(k), y and y.get(k)), "{:.2f}x")
        w(f"| {n} | {r(a, c, 'delivered_per_s')} | {r(a, d, 'delivered_per_s')} | "
          f"{r(b, d, 'delivered_per_s')} | {r(a, c, 'cpu_s_per_1000')} | "
          f"{r(b, d, 'cpu_s_per_1000')} | {r(a, c, 'peak_pss_mib')} |")
    w("")

    if any(s.get("smtp_source") for s in res["scenarios"].values()):
        w("## smtp-source (Postfix's generator: 4 KiB unsigned, one message per connection, "
          "50 sessions, 1,000 messages; one run)\n")
        w("| scenario | accepted msg/s | delivered msg/s | CPU s / 1000 msgs |")
        w("|---|---:|---:|---:|")
        for key, s in res["scenarios"].items():
            ss = s.get("smtp_source")
            if ss:
                w(f"| ({key}) {s['name']} | {ss['accepted_per_s']:.1f} | "
                  f"{ss['delivered_per_s']:.1f} | {ss['cpu_s_per_1000']:.2f} |")
        w("")

    tl = res.get("tls")
    if tl:
        w("## STARTTLS: one message per connection, one session\n")
        w("A new connection for every message (banner, EHLO, [STARTTLS, EHLO], MAIL, RCPT, "
          "DATA, QUIT), TLS 1.3 with the defaults of each server, 100 messages. A ~43 ms stall on "
          "the first read after the handshake (seen in Postfix while building a reference "
          "gateway, DESIGN.md) would cap this near 20 msgs/s.\n")
        w("| server | plain msgs/s | STARTTLS msgs/s | end-of-data -> 250 p50 ms (STARTTLS) |")
        w("|---|---:|---:|---:|")
        for name in ("mxgate", "postfix"):
            pl, st = tl.get(f"{name}-plain"), tl.get(f"{name}-starttls")
            if pl and st:
                w(f"| {name} (no checks) | {pl['accepted_per_s']:.1f} | {st['accepted_per_s']:.1f} | "
                  f"{st['latency']['p50_ms']:.1f} |")
        if tl.get("error"):
            w(f"\nfailed: {tl['error'][:300]}")
        w("")

    cs = res.get("connections")
    if cs:
        w("## Connection scale (mxgate)\n")
        w("| connections | open | RSS before MiB | RSS with them MiB | RSS per connection KiB | "
          "new client's banner wait p50 / p99 / max ms | banner while opening them (256 connects in flight) p50 / p99 ms |")
        w("|---|---:|---:|---:|---:|---|---|")
        for mode, label in (("idle", "idle after banner"), ("starttls", "after STARTTLS")):
            c = cs.get(mode)
            if not c:
                continue
            if "error" in c:
                w(f"| {label} | failed: {c['error'][:150]} | | | | | |")
                continue
            pb, bo = c["probe_banner"], c["banner_while_opening"]
            w(f"| {c['requested']} {label} | {c['open']} | {c['rss_before_mib']:.1f} | "
              f"{c['rss_with_conns_mib']:.1f} | {_f(c['rss_per_conn_kib'], '{:.2f}')} | "
              f"{pb['p50_ms']:.2f} / {pb['p99_ms']:.2f} / {pb['max_ms']:.2f} | "
              f"{bo['p50_ms']:.2f} / {bo['p99_ms']:.2f} |")
        w("")

    comps = {(c["base"], c["variant"]): c for c in res.get("comparisons") or []}

    def pct(c, k):
        v = (c or {}).get(k + "_pct")
        if not v:
            return "-"
        return f"{v['median']:+.1f}% ({v['min']:+.1f} .. {v['max']:+.1f})"

    def lvl(k):
        return _level(res, k, 50)
    if any(lvl(k) for k in ("a+scan", "c+scan")):
        w("## Inspection: rspamd + clamd (issue 13), 50 sessions\n")
        w("CPU: the gateway's own cgroup; the scanners' cgroup (rspamd's main process, normal "
          "and proxy workers, clamd) during the same run; and the sum. The scanners' share of "
          "(a) and (c) is their idle background.\n")
        w("| scenario | accepted msg/s | delivered msg/s | CPU s / 1000 msgs: gateway | "
          "scanners (of which clamd) | total | latency p50 / p99 ms | 4xx / 5xx, all runs |")
        w("|---|---:|---:|---:|---:|---:|---|---:|")
        for k in ("a", "a+scan", "c", "c+scan"):
            lv = lvl(k)
            if not lv:
                continue
            w(f"| ({k}) {res['scenarios'][k]['name']} | {_f(lv['accepted_per_s'])} | "
              f"{_f(lv['delivered_per_s'])} | {_f(lv['cpu_s_per_1000'], '{:.2f}')} | "
              f"{_f(lv.get('scanner_cpu_s_per_1000'), '{:.2f}')} "
              f"({_f(lv.get('clamd_cpu_s_per_1000'), '{:.2f}')}) | "
              f"{_f(lv.get('total_cpu_s_per_1000'), '{:.2f}')} | "
              f"{lv['latency']['p50_ms']:.1f} / {lv['latency']['p99_ms']:.1f} | "
              f"{lv.get('tempfailed_all_runs', 0)} / {lv.get('rejected_all_runs', 0)} |")
        w("")
        ca, cc = comps.get(("a", "a+scan")), comps.get(("c", "c+scan"))
        w("What inspection costs, each gateway against its own run without it in the same "
          "round (median over the rounds, range in brackets):\n")
        w("| | rounds | accepted msg/s | delivered msg/s | total CPU per msg |")
        w("|---|---:|---:|---:|---:|")
        for label, c in (("mxgate (a) -> (a+scan)", ca), ("Postfix (c) -> (c+scan)", cc)):
            if c:
                w(f"| {label} | {c['rounds']} | {pct(c, 'accepted_per_s')} | "
                  f"{pct(c, 'delivered_per_s')} | {pct(c, 'cpu')} |")
        w("")

    cr = comps.get(("a", "a+rec"))
    if cr:
        w("## DMARC report recording on vs off (issue 14), 50 sessions\n")
        sp = cr.get("base_spread_accepted_per_s") or {}
        ra = [r["accepted_per_s"] for r in (res["scenarios"].get("a+rec", {}).get("raw", {})
                                             .get("50", []) + res["scenarios"].get("a+rec", {})
                                             .get("extra_raw", {}).get("50", []))]
        w(f"(a) and (a+rec) ran {cr['rounds']} rounds back to back (the first ones inside the "
          "interleaved rounds of everything else, the rest alternating which went first). "
          "Change of (a+rec) against (a) of the same round:\n")
        w("| | median (range) | per round |")
        w("|---|---|---|")
        for k, label in (("accepted_per_s", "accepted msg/s"), ("delivered_per_s",
                                                                "delivered msg/s"),
                         ("cpu", "CPU per msg")):
            v = cr.get(k + "_pct")
            if v:
                w(f"| {label} | {pct(cr, k)} | {', '.join(f'{x:+.1f}%' for x in v['rounds'])} |")
        w("")
        if sp:
            w(f"Run-to-run spread of (a) alone over the same rounds: accepted msg/s median "
              f"{sp['median']:.0f}, {sp['min']:.0f} .. {sp['max']:.0f} (range "
              f"{sp['range_pct']:.0f}% of the median, coefficient of variation "
              f"{sp['stdev_pct']:.1f}%); (a+rec): "
              + (f"{min(ra):.0f} .. {max(ra):.0f}." if ra else "-"))
        st = res["scenarios"].get("a+rec", {}).get("store")
        if st:
            w(f"\nAfter the runs the store held {st.get('recorded', '-')} evaluations for "
              f"{st.get('accepted')} messages accepted by (a+rec) "
              f"({st.get('dropped', '-')} dropped by the writer queue)"
              + (f"; {st['error']}" if st.get("error") else "") + ".")
        w("")

    w("## Targets\n")
    a50, c50, d50 = (_level(res, k, 50) for k in "acd")
    ra = _ratio(a50 and a50["delivered_per_s"], c50 and c50["delivered_per_s"])
    rd = _ratio(a50 and a50["delivered_per_s"], d50 and d50["delivered_per_s"])
    w(f"- (a) >= 3x (c) in delivered msgs/s at 50 sessions: {_f(ra, '{:.2f}x')} -> "
      f"{'met' if ra and ra >= 3 else 'NOT met' if ra else 'not measured'}")
    w(f"- (a) >= (d) at 50 sessions: {_f(rd, '{:.2f}x')} -> "
      f"{'met' if rd and rd >= 1 else 'NOT met' if rd else 'not measured'}")

    def per_run(x, y):
        rx = res["scenarios"].get(x, {}).get("raw", {}).get("50", [])
        ry = res["scenarios"].get(y, {}).get("raw", {}).get("50", [])
        return ", ".join(f"{a['delivered_per_s'] / b['delivered_per_s']:.2f}x"
                         for a, b in zip(rx, ry) if b.get("delivered_per_s"))
    if per_run("a", "c"):
        w(f"  - run by run (interleaved, so each pair shares its moment): (a)/(c) "
          f"{per_run('a', 'c')}; (a)/(d) {per_run('a', 'd')}")
    as50, cs50 = lvl("a+scan"), lvl("c+scan")
    if as50 or cs50:
        rs = _ratio(as50 and as50["delivered_per_s"], cs50 and cs50["delivered_per_s"])
        w(f"- (a+scan) >= 2x (c+scan) in delivered msgs/s at 50 sessions: {_f(rs, '{:.2f}x')} -> "
          f"{'met' if rs and rs >= 2 else 'NOT met' if rs else 'not measured'}")
        if per_run("a+scan", "c+scan"):
            w(f"  - run by run: {per_run('a+scan', 'c+scan')}")
        ca = comps.get(("a", "a+scan"))
        if ca and ca.get("delivered_per_s_pct"):
            w(f"  - what inspection costs mxgate: delivered msgs/s {pct(ca, 'delivered_per_s')}, "
              f"total CPU per message {pct(ca, 'cpu')}")
    if cr and cr.get("accepted_per_s_pct"):
        v = cr["accepted_per_s_pct"]
        w(f"- recording costs < 5% of the acceptance rate at 50 sessions: "
          f"{-v['median']:+.1f}% (median of {cr['rounds']} paired rounds; range "
          f"{-v['max']:+.1f} .. {-v['min']:+.1f}) -> "
          f"{'met' if -v['median'] < 5 else 'NOT met'}")
    idle = (cs or {}).get("idle") or {}
    if "rss_with_conns_mib" in idle:
        ok_mem = idle["open"] >= 10000 and idle["rss_with_conns_mib"] < 256
        ok_ban = idle["probe_banner"]["max_ms"] < 20
        w(f"- 10,000 idle connections in < 256 MiB RSS: {idle['open']} open, "
          f"{idle['rss_with_conns_mib']:.1f} MiB -> {'met' if ok_mem else 'NOT met'}")
        w(f"- banner wait < 20 ms meanwhile: max {idle['probe_banner']['max_ms']:.2f} ms "
          f"(p99 {idle['probe_banner']['p99_ms']:.2f}) -> {'met' if ok_ban else 'NOT met'}")
    else:
        w("- connection scale: not measured")
    w("")
    errs = [(k, s["error"]) for k, s in res["scenarios"].items() if s.get("error")]
    if res.get("scanners_error"):
        errs.append(("scanners", res["scanners_error"]))
    if errs:
        w("## Problems seen\n")
        for k, e in errs:
            w(f"- ({k}): `{e[:600]}`")
        w("")
    return "\n".join(out) + "\n"


def _titles(path):
    """(title, [section titles]) of a Markdown file: its first '# ' line and
    its '## ' lines; for a generated bench report, the date it names."""
    title, secs = path.name, []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return title, secs
    for line in lines:
        if line.startswith("# ") and title == path.name:
            title = line[2:].strip()
        elif line.startswith("## "):
            secs.append(line[3:].strip())
    if title == "mxgate benchmark results":
        # generated by bench.py: say which run it is, not its fixed sections
        prod = next((x for x in lines if x.startswith("Produced by")), "")
        i, j = prod.find("`bench/run.sh"), prod.find(" on 20")
        cmd = prod[i:prod.index("`", i + 1) + 1] if i >= 0 and "`" in prod[i + 1:] else ""
        secs = [f"{cmd or 'a bench run'} on {prod[j + 4:j + 24].rstrip(',. ')}"] if j >= 0 else []
    return title, secs


def appendix(out_dir, name):
    """What NAME.md keeps across bench.py runs: the spliced sections, from
    their own files, then the index of the other result files."""
    out_dir = Path(out_dir)
    parts = []
    for suffix, begin, end in KEPT:
        f = out_dir / f"{name}-{suffix}.md"
        try:
            text = f.read_text()
        except OSError:
            continue
        if begin in text and end in text:
            parts.append(text[text.index(begin):text.index(end) + len(end)] + "\n")
    own = {f"{name}.md"} | {f"{name}-{s}.md" for s, _, _ in KEPT}
    files = sorted(f for f in out_dir.glob("*.md") if f.name not in own)
    idx = [INDEX_MARK, "## Other results in this directory\n",
           "Kept apart from this run (not regenerated by `make bench`); newest sections first "
           "where a file holds several:\n"]
    for f in files:
        title, secs = _titles(f)
        idx.append(f"- [`{f.name}`]({f.name}): {title}"
                   + ("".join(f"\n  - {s}" for s in secs) if secs else ""))
    if not files:
        idx.append("- (none)")
    parts.append("\n".join(idx) + "\n")
    return "\n" + "\n".join(parts)


def main():
    """report.py RESULTS.json: write RESULTS.md again from it."""
    if len(sys.argv) != 2 or not sys.argv[1].endswith(".json"):
        sys.exit("usage: report.py results/NAME.json")
    src = Path(sys.argv[1])
    res = json.loads(src.read_text())
    md = markdown(res) + appendix(src.parent, src.name[:-5])
    dst = src.with_suffix(".md")
    dst.with_suffix(".md.tmp").write_text(md)
    os.replace(dst.with_suffix(".md.tmp"), dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
