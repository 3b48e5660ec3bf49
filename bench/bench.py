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
Plus: smtp-source (Postfix's generator, 4 KiB unsigned, one message per
connection) against each, connection scale (10,000 idle, 1,000 after
STARTTLS) for mxgate, and the disk's price of one durable commit (fsprobe).

Every loop is bounded: message counts are fixed, every client has a
deadline, every wait has a timeout.
"""

import argparse
import datetime
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
}
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
            " (+ uncommitted changes)" if sh(f"git -C {HERE.parent} status --porcelain") else ""),
        "postfix": sh("postconf -d -h mail_version"),
        "opendkim": sh("opendkim -V | head -1"),
        "opendmarc": sh("opendmarc -V | head -1"),
        "policyd_spf": sh("dpkg-query -W -f='${Version}' postfix-policyd-spf-python"),
        "unbound": sh("unbound -V | head -1"),
        "openssl": sh("openssl version"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
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
    c0 = sink.count()
    cpu0 = g.cpu_seconds()
    g.start_sampling()
    t0 = time.monotonic()
    r = run_mxload(bindir, server.port, sessions, per, ctx["manifest"], label)
    t_deliv, c1 = sink.wait_count(c0 + r["accepted"], timeout=120)
    if t_deliv is None:
        t_deliv = time.monotonic()
        log(f"  {label}: only {c1 - c0} of {r['accepted']} delivered within 120 s")
    cpu1 = g.cpu_seconds()
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
    log(f"  {label}: accepted {r['accepted']}/{r['sent']} {r['accepted_per_s']:.1f}/s, "
        f"delivered {delivered} {r['delivered_per_s']:.1f}/s, cpu {r['cpu_s']:.2f}s, "
        f"p50 {r['latency']['p50_ms']:.1f} ms p99 {r['latency']['p99_ms']:.1f} ms, "
        f"rss {rss / 1024:.0f} MiB" + (f" [{r['first_error']}]" if r["first_error"] else ""))
    return r


def median_of(runs):
    """Median of every numeric metric over the runs."""
    if not runs:
        return None
    out = {"runs": len(runs), "sessions": runs[0]["sessions"],
           "msgs_per_session": runs[0]["msgs_per_session"]}
    for k in ("accepted", "delivered", "accepted_per_s", "delivered_per_s", "cpu_s_per_1000",
              "peak_rss_mib", "peak_pss_mib", "errors", "rejected", "tempfailed"):
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


def start_server(ctx, key, sink=None, suffix=""):
    work, sink = ctx.get("qwork", ctx["work"]), sink or ctx["sink"]
    if key in ("a", "b"):
        s = benchlib.Mxgate(work, f"mxgate-{key}{suffix}", ctx["mxgate"], sink.port,
                            checks=(key == "a"))
    else:
        s = benchlib.Postfix(work, f"postfix-{key}{suffix}", sink.port, checks=(key == "c"))
    try:
        return s.start()
    except BaseException:
        s.stop()
        raise


def verify_checks(ctx, key):
    """Send the whole corpus once (4 sessions) through the scenario's gateway
    relaying to a sink that keeps the messages, and count what the gateway's
    Authentication-Results say: proof that the checks really ran."""
    sink = benchlib.Sink(ctx["work"], f"verify-{key}", dump=True).start()
    out = {"messages": 0, "spf=pass": 0, "dkim=pass": 0, "dmarc=pass": 0}
    server = None
    try:
        server = start_server(ctx, key, sink, "-verify")
        r = run_mxload(ctx["bindir"], server.port, 4, 5, ctx["manifest"], f"{key}-verify")
        sink.wait_count(r["accepted"], timeout=60)
        out["accepted"] = r["accepted"]
        out["first_error"] = r["first_error"]
    except Exception as e:
        out["error"] = str(e)[-500:]
    finally:
        if server:
            server.stop()
        sink.stop()
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
        for k in ("dkim=pass", "dmarc=pass"):
            out[k] += k in ar
        out["spf=pass"] += ("spf=pass" in ar) or spf.lower().startswith("received-spf: pass")
    log(f"  verify {key}: {out}")
    return out


def scenarios(ctx, keys, sessions_list, runs):
    """Start every scenario's gateway, then interleave the runs (a b c d, a b
    c d, ...) so that a slow moment of the shared machine hits all of them
    alike; the idle gateways cost nothing meanwhile."""
    res, servers = {}, {}
    for key in keys:
        res[key] = {"name": SCENARIOS[key], "levels": {}, "raw": {}}
        if key in ("a", "c"):
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
                    try:
                        r = one_run(ctx, server, n, PER_SESSION[n], f"{key}-{n}-r{i + 1}")
                        res[key]["raw"].setdefault(str(n), []).append(r)
                    except Exception as e:
                        log(f"scenario {key}: {e}")
                        res[key]["error"] = str(e)[-1500:]
                        servers.pop(key).stop()
            for key in res:
                if res[key]["raw"].get(str(n)):
                    res[key]["levels"][str(n)] = median_of(res[key]["raw"][str(n)])
        if ctx["smtp_source"]:
            for key, server in servers.items():
                res[key]["smtp_source"] = smtp_source_run(ctx, server)
    finally:
        for key, server in servers.items():
            if hasattr(server, "hwm_kib"):
                res[key]["vmhwm_mib"] = server.hwm_kib() / 1024
            server.stop()
    return res


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
    ap.add_argument("--scenarios", default="a,b,c,d")
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
        for key in keys:
            log(f"scenario {key}: {SCENARIOS[key]}")
        results["scenarios"] = scenarios(ctx, keys, sessions, args.runs)
        if not args.no_tls_check:
            log("TLS: one message per connection, one session")
            results["tls"] = tls_check(ctx)
        if not args.no_conn:
            log("connection scale")
            results["connections"] = conn_scale(ctx, args.idle, args.tls_conns)
    finally:
        ctx["sink"].stop()
        dns.close()
    results["duration_s"] = time.monotonic() - t_start
    results["machine"]["loadavg_at_end"] = sh("cat /proc/loadavg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(report.markdown(results))
    log(f"wrote {out / (args.name + '.md')} in {results['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
