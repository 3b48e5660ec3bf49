#!/usr/bin/env python3
"""bench.py - mxgate's benchmark, side by side with Postfix (issue 5).

Run through bench/run.sh (make bench), which puts it in a private network +
mount namespace.  It starts everything on loopback, runs, stops everything
and writes bench/results/latest.md and bench/results/latest.json.

Scenarios (each at every --sessions level, median of --runs runs):
  a  mxgate, SPF + DKIM + DMARC, fsync on, relaying to smtp-sink
  b  mxgate, checks off, fsync on
  c  Postfix + OpenDKIM (verify) + OpenDMARC milters + policyd-spf, relayhost = sink
  d  Postfix, no checks
At 50 sessions only (--extra-sessions), interleaved with the runs above:
  a+scan  (a) + clamd + rspamd (issue 13), on_failure = tempfail
  c+scan  (c) + clamav-milter + rspamd's milter proxy (same rspamd, same clamd),
          milter_default_action = tempfail, clamav-milter OnFail Defer
  a+rec   (a) + [reports] record = yes, SQLite in the queue dir (issue 14);
          with (a) for --rec-rounds rounds in all
Plus: smtp-source (Postfix's generator, 4 KiB unsigned, one message per
connection) against each, connection scale (10,000 idle, 1,000 after
STARTTLS) for mxgate, and the disk's price of one durable commit (fsprobe).

Every loop is bounded: message counts are fixed, every client has a
deadline, every wait has a timeout.
"""

import argparse
import datetime
import email.utils
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402
from benchlib import log  # noqa: E402
import corpus  # noqa: E402
import report  # noqa: E402

SCENARIOS = {
    "a": "mxgate, SPF+DKIM+DMARC, fsync",
    "b": "mxgate, no checks, fsync",
    "c": "Postfix + OpenDKIM + OpenDMARC + policyd-spf",
    "d": "Postfix, no checks",
    "a+scan": "mxgate as (a) + clamd + rspamd",
    "c+scan": "Postfix as (c) + clamav-milter + rspamd milter",
    "a+rec": "mxgate as (a) + DMARC report recording",
}
SCAN_KEYS = ("a+scan", "c+scan")
REC_KEYS = ("a+rec",)
# run only at the --extra-sessions levels
EXTRA_KEYS = SCAN_KEYS + REC_KEYS
# messages per session at each concurrency (sessions x msgs = messages per run)
PER_SESSION = {1: 500, 10: 150, 50: 60, 200: 15}


def build_tools(work):
    bindir = work / "bin"
    bindir.mkdir(exist_ok=True)
    cc = os.environ.get("CC", "cc")
    flags = ["-O2", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror"]
    for name, libs in (("mxload", ["-lssl", "-lcrypto", "-lpthread"]), ("fsprobe", [])):
        subprocess.run([cc, *flags, "-o", str(bindir / name), str(HERE / f"{name}.c"), *libs],
                       check=True)
    return bindir


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except Exception:
        return ""


def machine(work, mxgate_bin):
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": sh("free -h | awk '/^Mem:/{print $2}'"),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release; echo $PRETTY_NAME"),
        "disk": sh(f"findmnt -n -o SOURCE,FSTYPE,OPTIONS --target {work} | cut -c1-80"),
        "mxgate": sh(f"{mxgate_bin} version") + " @ " + sh(
            f"git -C {HERE.parent} rev-parse --short HEAD") + (
            " (+ uncommitted changes)" if sh(f"git -C {HERE.parent} status --porcelain -- . ':!bench/results'") else ""),
        "postfix": sh("postconf -d -h mail_version"),
        "opendkim": sh("opendkim -V | head -1"),
        "opendmarc": sh("opendmarc -V | head -1"),
        "policyd_spf": sh("dpkg-query -W -f='${Version}' postfix-policyd-spf-python"),
        "unbound": sh("unbound -V | head -1"),
        "openssl": sh("openssl version"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
        "rspamd": sh("rspamd --version | head -1"),
        "clamd": sh("clamd --version"),
        "clamav_milter": sh("clamav-milter --version"),
    }


def run_mxload(bindir, port, sessions, per, manifest, label, timeout=150, extra=()):
    cmd = [str(bindir / "mxload"), "send", "-p", str(port), "-c", str(sessions),
           "-m", str(per), "-M", str(manifest), "-T", str(timeout - 10), "-L", label,
           "-e", corpus.HELO, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"mxload failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")


def one_run(ctx, server, sessions, per, label):
    sink, bindir = ctx["sink"], ctx["bindir"]
    g = server.group
    sc = ctx.get("scanners")
    c0 = sink.count()
    cpu0 = g.cpu_seconds()
    scpu0 = sc.group.cpu_seconds() if sc else 0.0
    ccpu0 = sc.clamd_cpu_seconds() if sc else 0.0
    g.start_sampling()
    t0 = time.monotonic()
    r = run_mxload(bindir, server.port, sessions, per, ctx["manifest"], label)
    t_deliv, c1 = sink.wait_count(c0 + r["accepted"], timeout=120)
    if t_deliv is None:
        t_deliv = time.monotonic()
        log(f"  {label}: only {c1 - c0} of {r['accepted']} delivered within 120 s")
    cpu1 = g.cpu_seconds()
    scpu1 = sc.group.cpu_seconds() if sc else 0.0
    ccpu1 = sc.clamd_cpu_seconds() if sc else 0.0
    rss, pss = g.stop_sampling()
    delivered = c1 - c0
    r.update({
        "delivered": delivered,
        "delivered_per_s": delivered / (t_deliv - t0) if t_deliv > t0 else 0.0,
        "cpu_s": cpu1 - cpu0,
        "cpu_s_per_1000": (cpu1 - cpu0) / r["accepted"] * 1000 if r["accepted"] else None,
        "peak_rss_mib": rss / 1024,
        "peak_pss_mib": pss / 1024,
    })
    if sc:
        # the scanners' cgroup, counted for the gateway measured now: the runs
        # are sequential, so it is the only one using them
        r["scanner_cpu_s"] = scpu1 - scpu0
        r["clamd_cpu_s"] = ccpu1 - ccpu0
        r["scanner_cpu_s_per_1000"] = ((scpu1 - scpu0) / r["accepted"] * 1000
                                       if r["accepted"] else None)
        r["clamd_cpu_s_per_1000"] = ((ccpu1 - ccpu0) / r["accepted"] * 1000
                                     if r["accepted"] else None)
        r["total_cpu_s_per_1000"] = ((cpu1 - cpu0 + scpu1 - scpu0) / r["accepted"] * 1000
                                     if r["accepted"] else None)
    log(f"  {label}: accepted {r['accepted']}/{r['sent']} {r['accepted_per_s']:.1f}/s, "
        f"delivered {delivered} {r['delivered_per_s']:.1f}/s, cpu {r['cpu_s']:.2f}s, "
        f"p50 {r['latency']['p50_ms']:.1f} ms p99 {r['latency']['p99_ms']:.1f} ms, "
        f"rss {rss / 1024:.0f} MiB"
        + (f", scanners cpu {r['scanner_cpu_s']:.2f}s (clamd {r['clamd_cpu_s']:.2f}s)" if sc else "")
        + (f" [{r['first_error']}]" if r["first_error"] else ""))
    return r


def median_of(runs):
    """Median of every numeric metric over the runs."""
    if not runs:
        return None
    out = {"runs": len(runs), "sessions": runs[0]["sessions"],
           "msgs_per_session": runs[0]["msgs_per_session"]}
    for k in ("accepted", "delivered", "accepted_per_s", "delivered_per_s", "cpu_s_per_1000",
              "peak_rss_mib", "peak_pss_mib", "errors", "rejected", "tempfailed",
              "scanner_cpu_s_per_1000", "clamd_cpu_s_per_1000", "total_cpu_s_per_1000"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    out["latency"] = {k: statistics.median(r["latency"][k] for r in runs)
                      for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}
    classes = runs[0].get("by_class", {}).keys()
    out["by_class"] = {c: {k: statistics.median(r["by_class"][c][k] for r in runs
                                                if r["by_class"].get(c, {}).get("n"))
                           if any(r["by_class"].get(c, {}).get("n") for r in runs) else None
                           for k in ("p50_ms", "p95_ms", "p99_ms")} for c in classes}
    out["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), "")
    for k in ("rejected", "tempfailed", "errors"):
        out[k + "_all_runs"] = sum(r.get(k) or 0 for r in runs)
    return out


def smtp_source_run(ctx, server, sessions=50, total=1000):
    sink = ctx["sink"]
    g = server.group
    c0, cpu0 = sink.count(), g.cpu_seconds()
    t0 = time.monotonic()
    p = subprocess.run(["/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(total),
                        "-l", "4096", "-f", f"load@{corpus.PLAIN_DOMAIN}",
                        "-t", "user@example.test", "-M", corpus.HELO,
                        f"127.0.0.1:{server.port}"],
                       capture_output=True, text=True, timeout=180)
    t1 = time.monotonic()
    t_deliv, c1 = sink.wait_count(c0 + total, timeout=120)
    t_deliv = t_deliv or time.monotonic()
    cpu1 = g.cpu_seconds()
    res = {"sessions": sessions, "messages": total, "rc": p.returncode,
           "stderr": p.stderr[-300:], "accepted_per_s": total / (t1 - t0),
           "delivered": c1 - c0, "delivered_per_s": (c1 - c0) / (t_deliv - t0),
           "cpu_s_per_1000": (cpu1 - cpu0) / total * 1000}
    log(f"  smtp-source {sessions}x: {res['accepted_per_s']:.1f}/s accepted, "
        f"{res['delivered_per_s']:.1f}/s delivered, rc {p.returncode} {p.stderr[-200:].strip()}")
    return res


def scan_conf(scanners):
    """mxgate's inspection sections: clamd, then rspamd; a scanner down or
    failing -> 451 (tempfail), never a silent pass."""
    return (f"\n[clamav]\nsocket = unix:{scanners.clamd_sock}\non_failure = tempfail\n"
            f"\n[rspamd]\naddress = 127.0.0.1:{scanners.rspamd_port}\non_failure = tempfail\n")


# (a) + recording: [reports] with its defaults (SQLite QUEUE_DIR/reports.db, WAL)
REC_CONF = "\n[reports]\nrecord = yes\n"


def start_server(ctx, key, sink=None, suffix=""):
    work, sink = ctx.get("qwork", ctx["work"]), sink or ctx["sink"]
    name = key.replace("+", "-")
    if key[0] in ("a", "b"):
        extra = (scan_conf(ctx["scanners"]) if key in SCAN_KEYS
                 else REC_CONF if key in REC_KEYS else "")
        s = benchlib.Mxgate(work, f"mxgate-{name}{suffix}", ctx["mxgate"], sink.port,
                            checks=(key != "b"), extra_conf=extra)
    else:
        s = benchlib.Postfix(work, f"postfix-{name}{suffix}", sink.port, checks=(key != "d"),
                             scan=ctx["scanners"] if key in SCAN_KEYS else None)
    try:
        return s.start()
    except BaseException:
        s.stop()
        raise


def probe(port, body, tag):
    """One unsigned message from the SPF-only domain (SPF pass, no DMARC
    policy: no check refuses it) with `body`; returns the reply to DATA."""
    import smtplib
    msg = (f"From: <probe@{corpus.PLAIN_DOMAIN}>\r\nTo: <user1@{benchlib.RCPT_DOMAIN}>\r\n"
           f"Subject: bench probe {tag}\r\nMessage-ID: <probe.{tag}@{corpus.PLAIN_DOMAIN}>\r\n"
           f"Date: {email.utils.formatdate()}\r\n\r\n{body}\r\n")
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname=corpus.HELO, timeout=60) as c:
            c.sendmail(f"probe@{corpus.PLAIN_DOMAIN}", [f"user1@{benchlib.RCPT_DOMAIN}"],
                       msg.encode())
            return "250"
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return f"RCPT {code} {text.decode(errors='replace')}"
    except smtplib.SMTPResponseException as e:
        return f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}"
    except Exception as e:
        return f"error: {e}"


def report_rows(server):
    """(evaluations recorded, evaluations dropped) in an (a+rec) gateway's
    report store, read after it stopped (its writer thread drains first)."""
    import sqlite3
    db = server.dir / "queue" / "reports.db"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT count(*) FROM evaluation").fetchone()[0]
            dropped = con.execute("SELECT coalesce(sum(n), 0) FROM dropped").fetchone()[0]
        finally:
            con.close()
        return {"recorded": rows, "dropped": dropped}
    except Exception as e:
        return {"error": f"{db}: {e}"}


def verify_checks(ctx, key):
    """Send the whole corpus once (4 sessions) through the scenario's gateway
    relaying to a sink that keeps the messages, and count what the gateway's
    Authentication-Results say: proof that the checks really ran.  With
    inspection, also count the scanners' traces (mxgate: an X-Spam-Status
    that names scanner=rspamd - with rspamd down its own status stays,
    without it - and X-Virus-Scan: clean; Postfix: rspamd's X-Spam-Status
    and clamav-milter's X-Virus-Status: Clean) and send one EICAR and one GTUBE
    message, which must be refused; with recording, count the evaluations in
    the report store."""
    sink = benchlib.Sink(ctx["work"], f"verify-{key.replace('+', '-')}", dump=True).start()
    out = {"messages": 0, "spf=pass": 0, "dkim=pass": 0, "dmarc=pass": 0}
    scan = key in SCAN_KEYS
    if scan:
        out.update({"spam_checked": 0, "virus_checked": 0})
    server = None
    try:
        server = start_server(ctx, key, sink, "-verify")
        r = run_mxload(ctx["bindir"], server.port, 4, 5, ctx["manifest"], f"{key}-verify")
        sink.wait_count(r["accepted"], timeout=60)
        out["accepted"] = r["accepted"]
        out["first_error"] = r["first_error"]
        if scan:
            out["eicar_reply"] = probe(server.port, benchlib.EICAR.decode(), "eicar")
            out["gtube_reply"] = probe(server.port, benchlib.GTUBE, "gtube")
    except Exception as e:
        out["error"] = str(e)[-500:]
    finally:
        if server:
            server.stop()
        sink.stop()
    if server and key in REC_KEYS:
        out.update(report_rows(server))
    for f in sorted(sink.dump.iterdir()):
        raw = f.read_bytes().replace(b"\r\n", b"\n")
        head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
        fields, cur = [], ""
        for line in head.split("\n"):
            if line[:1] in (" ", "\t"):
                cur += " " + line.strip()
            else:
                if cur:
                    fields.append(cur)
                cur = line
        fields.append(cur)
        ar = " ".join(x for x in fields if x.lower().startswith("authentication-results:")
                      and benchlib.HOSTNAME in x)
        spf = " ".join(x for x in fields if x.lower().startswith("received-spf:"))
        out["messages"] += 1
        if scan:
            st = [x for x in fields if x.lower().startswith("x-spam-status:")]
            if isinstance(server, benchlib.Postfix):
                out["spam_checked"] += bool(st) and not any("unchecked" in x.lower()
                                                            for x in st)
                out["virus_checked"] += any(x.lower().replace(" ", "") == "x-virus-status:clean"
                                            for x in fields)
            else:
                out["spam_checked"] += any("scanner=rspamd" in x for x in st)
                out["virus_checked"] += any(
                    x.lower().replace(" ", "").startswith("x-virus-scan:clean;")
                    for x in fields)
        for k in ("dkim=pass", "dmarc=pass"):
            out[k] += k in ar
        out["spf=pass"] += ("spf=pass" in ar) or spf.lower().startswith("received-spf: pass")
    log(f"  verify {key}: {out}")
    return out


def scenarios(ctx, keys, sessions_list, runs, extra_levels=(50,), rec_rounds=0):
    """Start every scenario's gateway, then interleave the runs (a b c d, a b
    c d, ...) so that a slow moment of the shared machine hits all of them
    alike; the idle gateways cost nothing meanwhile.  The EXTRA_KEYS run at
    extra_levels only; there, (a) and (a+rec) then run further rounds
    together, alternating which goes first, until they have rec_rounds
    pairs (kept apart in "extra_raw", so every cell of the main table still
    has the same runs)."""
    res, servers = {}, {}
    for key in keys:
        res[key] = {"name": SCENARIOS[key], "levels": {}, "raw": {}}
        if key in ("a", "c") + EXTRA_KEYS:
            res[key]["verify"] = verify_checks(ctx, key)
        try:
            servers[key] = start_server(ctx, key)
            # one message end to end first: a gateway that cannot deliver is reported as such
            r = one_run(ctx, servers[key], 1, 1, f"{key}-smoke")
            if r["accepted"] != 1 or r["delivered"] != 1:
                raise RuntimeError(f"smoke test: accepted {r['accepted']}, delivered "
                                   f"{r['delivered']}: {r['first_error']}\n"
                                   f"{servers[key].log_tail(1500)}")
        except Exception as e:
            log(f"scenario {key}: cannot run: {str(e)[:800]}")
            res[key]["error"] = str(e)[-1500:]
            if key in servers:
                servers.pop(key).stop()
    try:
        for n in sessions_list:
            for i in range(runs):
                for key, server in list(servers.items()):
                    if key in EXTRA_KEYS and n not in extra_levels:
                        continue
                    try:
                        r = one_run(ctx, server, n, PER_SESSION[n], f"{key}-{n}-r{i + 1}")
                        res[key]["raw"].setdefault(str(n), []).append(r)
                    except Exception as e:
                        log(f"scenario {key}: {e}")
                        res[key]["error"] = str(e)[-1500:]
                        servers.pop(key).stop()
            pair = [k for k in ("a", "a+rec") if k in servers]
            if n in extra_levels and len(pair) == 2:
                for i in range(runs, rec_rounds):
                    for key in (pair if i % 2 == 0 else pair[::-1]):
                        if key not in servers:
                            continue
                        try:
                            r = one_run(ctx, servers[key], n, PER_SESSION[n],
                                        f"{key}-{n}-r{i + 1}")
                            res[key].setdefault("extra_raw", {}).setdefault(
                                str(n), []).append(r)
                        except Exception as e:
                            log(f"scenario {key}: {e}")
                            res[key]["error"] = str(e)[-1500:]
                            servers.pop(key).stop()
            for key in res:
                if res[key]["raw"].get(str(n)):
                    res[key]["levels"][str(n)] = median_of(res[key]["raw"][str(n)])
        if ctx["smtp_source"]:
            for key, server in servers.items():
                if key not in EXTRA_KEYS:
                    res[key]["smtp_source"] = smtp_source_run(ctx, server)
    finally:
        for key, server in servers.items():
            if hasattr(server, "hwm_kib"):
                res[key]["vmhwm_mib"] = server.hwm_kib() / 1024
            server.stop()
            if key in REC_KEYS:
                # every evaluation of the measured runs must be in the store:
                # a recording that dropped them would look cheap
                st = report_rows(server)
                st["accepted"] = sum(r["accepted"] for lst in (
                    list(res[key]["raw"].values()) + list(res[key].get("extra_raw", {}).values()))
                    for r in lst) + 1  # + the smoke test's message
                res[key]["store"] = st
                log(f"  {key} report store: {st}")
    return res


def compare(res, base, variant, n):
    """(variant) against (base) at n sessions, round by round (each pair ran
    in the same round; the extra (a)/(a+rec) rounds back to back): the % change of accepted and delivered msgs/s and of CPU
    per message, median and range over the rounds, and (base)'s own
    run-to-run spread for scale."""
    def runs(k):
        s = res.get(k) or {}
        return (s.get("raw", {}).get(str(n), []) + s.get("extra_raw", {}).get(str(n), []))
    rb, rv = runs(base), runs(variant)
    pairs = [(b, v) for b, v in zip(rb, rv)]
    if not pairs:
        return None
    out = {"base": base, "variant": variant, "sessions": n, "rounds": len(pairs)}
    for metric, cpu_key in (("accepted_per_s", None), ("delivered_per_s", None),
                            ("cpu", "total_cpu_s_per_1000")):
        vals = []
        for b, v in pairs:
            if cpu_key:
                x = v.get(cpu_key) if v.get(cpu_key) is not None else v.get("cpu_s_per_1000")
                y = b.get(cpu_key) if b.get(cpu_key) is not None else b.get("cpu_s_per_1000")
            else:
                x, y = v.get(metric), b.get(metric)
            if x is not None and y:
                vals.append((x / y - 1) * 100)
        if vals:
            out[metric + "_pct"] = {"median": statistics.median(vals), "min": min(vals),
                                    "max": max(vals), "rounds": [round(x, 1) for x in vals]}
    for metric in ("accepted_per_s", "delivered_per_s"):
        vals = [b[metric] for b in rb if b.get(metric)]
        if len(vals) >= 2:
            med = statistics.median(vals)
            out["base_spread_" + metric] = {
                "median": med, "min": min(vals), "max": max(vals),
                "range_pct": (max(vals) - min(vals)) / med * 100,
                "stdev_pct": statistics.stdev(vals) / statistics.mean(vals) * 100}
    return out


def tls_check(ctx, n=100):
    """One session, a new connection per message, with and without STARTTLS
    (TLS 1.3): the stall DESIGN.md saw in Postfix (~43 ms on the first read
    after the handshake) would show as a rate near 20 msgs/s."""
    work, out = ctx.get("qwork", ctx["work"]), {}
    tls = (ctx["tls"].chain, ctx["tls"].key)
    servers = [("mxgate", benchlib.Mxgate(work, "mxgate-tls", ctx["mxgate"], ctx["sink"].port,
                                          checks=False, tls=tls)),
               ("postfix", benchlib.Postfix(work, "postfix-tls", ctx["sink"].port, checks=False,
                                            tls=tls))]
    try:
        for name, srv in servers:
            srv.start()
            for mode, extra in (("plain", ["-r"]), ("starttls", ["-r", "-x"])):
                r = run_mxload(ctx["bindir"], srv.port, 1, n, ctx["manifest"],
                               f"{name}-{mode}", extra=extra)
                out[f"{name}-{mode}"] = {k: r[k] for k in ("accepted", "sent", "elapsed_s",
                                                            "accepted_per_s", "latency",
                                                            "first_error")}
                log(f"  {name} {mode}, 1 msg/connection: {r['accepted_per_s']:.1f} msgs/s, "
                    f"end-of-data p50 {r['latency']['p50_ms']:.1f} ms"
                    + (f" [{r['first_error']}]" if r["first_error"] else ""))
    except Exception as e:
        log(f"tls check: {e}")
        out["error"] = str(e)[-800:]
    finally:
        for _, srv in servers:
            srv.stop()
    return out


def conn_scale(ctx, n_idle, n_tls):
    work, bindir = ctx["work"], ctx["bindir"]
    # several source addresses so that ephemeral ports never run short
    srcs = ",".join(f"127.0.0.{i}" for i in range(2, 12))
    out = {}
    for mode, n in (("idle", n_idle), ("starttls", n_tls)):
        gw = benchlib.Mxgate(work, f"mxgate-conn-{mode}", ctx["mxgate"], ctx["sink"].port,
                             checks=False, tls=(ctx["tls"].chain, ctx["tls"].key))
        try:
            gw.start()
            time.sleep(0.5)
            rss0 = gw.rss_kib()
            cmd = [str(bindir / "mxload"), "idle", "-p", str(gw.port), "-n", str(n), "-s", srcs,
                   "-P", "50", "-H", "120", "-T", "150"] + (["-t"] if mode == "starttls" else [])
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            ready = None
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 1.0)
                if r:
                    line = p.stdout.readline()
                    if not line:
                        break
                    if line.startswith("READY "):
                        ready = json.loads(line[6:])
                        break
            time.sleep(0.3)
            rss1 = gw.rss_kib()
            try:
                p.stdin.write("\n")
                p.stdin.flush()
            except OSError:
                pass
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if ready is None:
                raise RuntimeError("mxload idle: " + p.stderr.read()[-500:])
            opened = ready["open"]
            out[mode] = {
                "requested": n, "open": opened, "failed": ready["failed"],
                "first_error": ready["first_error"], "open_s": ready["open_s"],
                "rss_before_mib": rss0 / 1024, "rss_with_conns_mib": rss1 / 1024,
                "rss_per_conn_kib": (rss1 - rss0) / opened if opened else None,
                "banner_while_opening": ready["banner_while_opening"],
                "probe_banner": ready["probe_banner"],
            }
            log(f"  {mode}: {opened}/{n} open in {ready['open_s']:.1f}s, rss {rss0 / 1024:.1f} -> "
                f"{rss1 / 1024:.1f} MiB ({out[mode]['rss_per_conn_kib'] or 0:.2f} KiB/conn), "
                f"new-client banner p50 {ready['probe_banner']['p50_ms']:.2f} ms "
                f"p99 {ready['probe_banner']['p99_ms']:.2f} ms")
        except Exception as e:
            log(f"connection scale {mode}: {e}")
            out[mode] = {"error": str(e)[-800:]}
        finally:
            gw.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mxgate", default=str(HERE.parent / "build-bench" / "mxgate"))
    # each variant runs right after its base in a round (a+rec after a; a+scan
    # next to c+scan, the pair of the inspection target)
    ap.add_argument("--scenarios", default="a,a+rec,b,c,d,a+scan,c+scan",
                    help="comma-separated, in the order the runs of a round go, of:\n"
                         + ", ".join(SCENARIOS))
    ap.add_argument("--no-scan", action="store_true",
                    help="skip the inspection scenarios (a+scan, c+scan) and their scanners")
    ap.add_argument("--no-recording", action="store_true",
                    help="skip the report-recording scenario (a+rec)")
    ap.add_argument("--extra-sessions", default="50",
                    help="sessions levels at which a+scan, c+scan and a+rec run (default 50)")
    ap.add_argument("--rec-rounds", type=int, default=12,
                    help="rounds of (a) and (a+rec) in all at those levels (the first\n"
                         "--runs of them interleaved with everything else)")
    ap.add_argument("--sessions", default="1,10,50,200")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--tls-conns", type=int, default=1000)
    ap.add_argument("--no-conn", action="store_true", help="skip the connection-scale part")
    ap.add_argument("--no-smtp-source", action="store_true")
    ap.add_argument("--no-tls-check", action="store_true",
                    help="skip the one-message-per-STARTTLS-connection check")
    ap.add_argument("--journal-fs", action="store_true",
                    help="put the gateways' queues on a fresh ext4 WITH a journal (a 4 GiB\n"
                         "loop-mounted image in the work dir): a control for file systems\n"
                         "whose inode allocation is slow without one (docs/performance.md)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="latest")
    ap.add_argument("--work", default=str(HERE / "work"))
    args = ap.parse_args()

    t_start = time.monotonic()
    work = Path(args.work)
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)])
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    benchlib.setup_namespace(work)
    benchlib.cleanup_stale_groups()
    ctx = {"work": work, "mxgate": args.mxgate, "smtp_source": not args.no_smtp_source}
    ctx["bindir"] = build_tools(work)
    if args.journal_fs:
        img, mnt = work / "ext4-journal.img", work / "qfs"
        mnt.mkdir()
        subprocess.run(["truncate", "-s", "4G", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "has_journal", str(img)], check=True)
        # private mount namespace (run.sh): the mount and its loop device go with it
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
        os.chmod(mnt, 0o755)
        ctx["qwork"] = mnt
    info = machine(ctx.get("qwork", work), args.mxgate)
    if args.journal_fs:
        info["disk"] += " (queues on a loop-mounted ext4 with journal: --journal-fs)"
    log(f"machine: {info['cpu']}, {info['cores']} cores; mxgate {info['mxgate']}")

    dns = benchlib.Dns(work)
    ctx["manifest"] = corpus.make_corpus(work / "corpus", dns)
    dns.start()
    import mxtest
    ctx["tls"] = mxtest.make_test_ca(work, hostnames=(benchlib.HOSTNAME, "localhost"),
                                     ips=("127.0.0.1",))
    ctx["sink"] = benchlib.Sink(work).start()

    results = {"machine": info, "scenarios": {}, "per_session": PER_SESSION,
               "runs": args.runs, "command": " ".join(sys.argv[1:])}
    try:
        fsdir = work / "fsprobe"
        fsdir.mkdir()
        p = subprocess.run([str(ctx["bindir"] / "fsprobe"), str(fsdir), "300", "4096"],
                           capture_output=True, text=True, timeout=90)
        results["fsprobe"] = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr}
        log(f"fsprobe: {results['fsprobe']}")

        sessions = [int(x) for x in args.sessions.split(",") if x]
        keys = [k for k in args.scenarios.split(",") if k]
        if args.no_scan:
            keys = [k for k in keys if k not in SCAN_KEYS]
        if args.no_recording:
            keys = [k for k in keys if k not in REC_KEYS]
        extra_levels = [int(x) for x in args.extra_sessions.split(",") if x]
        if any(k in EXTRA_KEYS for k in keys) and not set(extra_levels) & set(sessions):
            log(f"note: {','.join(k for k in keys if k in EXTRA_KEYS)} run only at "
                f"--extra-sessions {args.extra_sessions}, which --sessions lacks")
        for key in keys:
            log(f"scenario {key}: {SCENARIOS[key]}")
        if any(k in SCAN_KEYS for k in keys):
            log("scanners: rspamd (normal + milter proxy) and clamd")
            sc = benchlib.Scanners(work)
            try:
                ctx["scanners"] = sc.start()
            except Exception as e:
                sc.stop()
                log(f"scanners: cannot start: {str(e)[:1500]}")
                results["scanners_error"] = str(e)[-1500:]
                keys = [k for k in keys if k not in SCAN_KEYS]
        results["scenarios"] = scenarios(ctx, keys, sessions, args.runs, extra_levels,
                                         args.rec_rounds)
        results["comparisons"] = [c for c in (
            compare(results["scenarios"], base, variant, n)
            for base, variant in (("a", "a+scan"), ("a", "a+rec"), ("c", "c+scan"))
            for n in extra_levels) if c]
        if not args.no_tls_check:
            log("TLS: one message per connection, one session")
            results["tls"] = tls_check(ctx)
        if not args.no_conn:
            log("connection scale")
            results["connections"] = conn_scale(ctx, args.idle, args.tls_conns)
    finally:
        if ctx.get("scanners"):
            ctx["scanners"].stop()
        ctx["sink"].stop()
        dns.close()
    results["duration_s"] = time.monotonic() - t_start
    results["machine"]["loadavg_at_end"] = sh("cat /proc/loadavg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the report first (it may fail), then both files at once: an interrupted
    # or failed run never leaves them half-written or out of step
    # + the sections blackhole.py and flood.py keep in it, and the index of
    # the other result files (ab.md, recording.md, ...)
    md = report.markdown(results) + report.appendix(out, args.name)
    for ext, text in (("json", json.dumps(results, indent=1) + "\n"), ("md", md)):
        (out / f"{args.name}.{ext}.tmp").write_text(text)
    for ext in ("json", "md"):
        os.replace(out / f"{args.name}.{ext}.tmp", out / f"{args.name}.{ext}")
    log(f"wrote {out / (args.name + '.md')} in {results['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
