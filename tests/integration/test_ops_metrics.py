"""Metrics you can alert on and delivery lines you can read (issue 16):
every labelled series the postmaster guide recommends alerting on exists
from start-up at 0 - the guide's table against /metrics of a fresh daemon,
and every label value the C sources pass for those families against the
guide's table (so a new refusal reason cannot be forgotten); per-route delivery counters and time; queue size by
state; the server certificate's expiry; mxgate_build_info; process CPU,
memory and descriptors.  A delivery line's delay= is the time since
arrival, with delays=queue/connect/transfer and the route."""

import pathlib
import re
import ssl
import subprocess
import time

import mxtest
from downstream import Downstream, relay_extra
from mxtest import free_port, make_message, mxgate_bin, scaled, source_dir, wait_for
from test_production_observe import parse_metrics, scrape

SENDER = "sender@example.test"

# (family, labels) the guide's alerts and dashboards use
ALERT_SERIES = [
    ("mxgate_config_reloads_total", 'result="failed"'),
    ("mxgate_config_reloads_total", 'result="ok"'),
    ("mxgate_dmarc_results_total", 'result="fail"'),
    ("mxgate_delivery_attempts_total", 'outcome="deferred"'),
    ("mxgate_delivery_attempts_total", 'outcome="bounced"'),
    ("mxgate_queue_envelope_errors_total", 'error="corrupt"'),
    ("mxgate_connections_refused_total", 'reason="max_connections"'),
    ("mxgate_connections_refused_total", 'reason="max_connections_per_net"'),
    ("mxgate_connections_refused_total", 'reason="untrusted_proxy_header"'),
    ("mxgate_connections_refused_total", 'reason="ratelimit"'),
    ("mxgate_connections_refused_total", 'reason="dnsbl"'),
    ("mxgate_messages_rejected_total", 'reason="attachment"'),
    ("mxgate_messages_rejected_total", 'reason="greylisted"'),
    ("mxgate_messages_rejected_total", 'reason="policy_quarantine"'),
    ("mxgate_messages_rejected_total", 'reason="virus"'),
    ("mxgate_messages_rejected_total", 'reason="spam"'),
    ("mxgate_messages_rejected_total", 'reason="scan_tempfail"'),
    ("mxgate_accept_pauses_total", 'error="EMFILE"'),
    ("mxgate_messages_rejected_total", 'reason="policy"'),
    ("mxgate_spam_verdicts_total", 'verdict="spam"'),
    ("mxgate_policy_actions_total", 'action="tempfail"'),
    ("mxgate_queue_messages_by_state", 'state="active"'),
    ("mxgate_queue_messages_by_state", 'state="deferred"'),
    ("mxgate_queue_messages_by_state", 'state="hold"'),
    ("mxgate_queue_messages_by_state", 'state="quarantine"'),
    ("mxgate_route_delivered_total", 'route="default"'),
    ("mxgate_route_deferred_total", 'route="default"'),
    ("mxgate_route_bounced_total", 'route="default"'),
    ("mxgate_route_delivery_seconds_total", 'route="default"'),
]


TOKEN = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
WORD_LITERAL = re.compile(r'"([a-zA-Z][a-zA-Z0-9_]*)"')
# calls that pass a family's label value without naming the family
WRAPPERS = {"mxgate_messages_rejected_total": [
    r"\bsmtp_data_refuse\(\s*s\s*,(.*?)\)\s*;",         # (s, reply, reason)
    r"\brefuse\(\s*s\s*,(.*?),\s*async\s*\)\s*;",    # smtp-session-scan.c
    r"\bapply\(\s*s\s*,[^;]*,\s*([^,;]*?)\s*\)\s*;"]}  # smtp-session-attach.c: last arg


def c_code(text):
    """C source without comments; string literals kept only when they are
    one word (a label value), others (replies, formats) emptied."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            lit = text[i + 1:j]
            out.append(c + (lit if c == '"' and TOKEN.fullmatch(lit) else "") + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def arg_values(arg, code):
    """One-word literals in a call's label argument; for a variable, the
    literals assigned to it in the same file (`*reason = "size"`)."""
    found = set(WORD_LITERAL.findall(arg))
    m = re.search(r"([a-z_]\w*)\s*$", arg)
    if not found and m:
        for a in re.finditer(r"(?<![\w>.])%s\s*=(?!=)([^;]*);" % m.group(1), code):
            found |= set(WORD_LITERAL.findall(a.group(1)))
    return found


def source_label_values(family):
    """{value: {file, ...}} of the label values the C sources pass for family."""
    vals = {}
    root = pathlib.Path(source_dir())
    for f in sorted(root.glob("*/*.c")):
        if f.parent.name in ("tests", "bench"):
            continue
        code = c_code(f.read_text())
        pats = [r"\butil_metrics_(inc|add|set)\(\s*\"%s\"\s*,(.*?)\)\s*;" % family]
        for pat in pats + WRAPPERS.get(family, []):
            for m in re.finditer(pat, code, re.S):
                arg = m.group(m.lastindex)
                if m.lastindex == 2 and m.group(1) != "inc":
                    arg = arg.rsplit(",", 1)[0]   # drop the amount
                for v in arg_values(arg, code):
                    vals.setdefault(v, set()).add(f.name)
    return vals


def guide_start_table():
    """[(family, label, [values])] of the guide's table of series that exist
    from start-up (values empty: from the config, or unlabelled)."""
    text = (pathlib.Path(source_dir()) / "docs/postmaster-guide.md").read_text()
    start = text.index("Every series below exists from start-up")
    head = text.index("| metric |", start)
    rows = []
    for line in text[head:text.index("\n\n", head)].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"`(\w+)`: (.*)$", cells[1])
        for fam in re.findall(r"`([a-z_]+)`", cells[0]):
            rows.append((fam, m.group(1) if m else None,
                         [v.strip() for v in m.group(2).split(",")] if m else []))
    return rows


def metrics(port):
    status, _, body = scrape(port)
    assert status == 200
    return parse_metrics(body)


def test_alertable_series_exist_at_start(gateway, test_ca):
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}"}}, tls=test_ca)
    m = metrics(mport)
    for name, labels in ALERT_SERIES:
        assert m.get((name, "{" + labels + "}")) == 0, (name, labels)
    # the guide's table is exactly true of a fresh daemon ...
    table = guide_start_table()
    assert len(table) > 20, table
    for fam, label, values in table:
        assert any(k[0] == fam for k in m), fam
        for v in values:
            assert m.get((fam, '{%s="%s"}' % (label, v))) == 0, (fam, v)
        # ... and lists every value the sources can emit for that family
        emitted = source_label_values(fam)
        missing = {v: sorted(f) for v, f in emitted.items() if v not in values}
        assert values or not emitted, (fam, sorted(emitted))
        assert not missing, f"{fam}: emitted but not listed in the guide (and not at 0 " \
            f"from start-up, see smtp/smtp-reasons.c): {missing}"
    # the scan sees the call sites (it must not pass by finding nothing)
    assert {"access", "max_connections_per_net", "untrusted_proxy_header", "dnsbl"} <= \
        set(source_label_values("mxgate_connections_refused_total"))
    assert {"size", "policy", "greylisted", "attachment", "virus", "spam_tempfail",
            "content_busy"} <= set(source_label_values("mxgate_messages_rejected_total"))
    version = subprocess.run([mxgate_bin(), "version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert m[("mxgate_build_info", '{version="%s"}' % version)] == 1
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds"):
        assert m[(name, "")] > 0, name
    assert ("process_cpu_seconds_total", "") in m
    # the certificate's notAfter, as openssl reads it
    end = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", test_ca.cert],
                         capture_output=True, text=True, check=True).stdout.strip()
    not_after = ssl.cert_time_to_seconds(end.split("=", 1)[1])
    assert m[("mxgate_tls_certificate_expiry_timestamp_seconds", "")] == not_after
    # one delivery through the default (directory) route is counted there
    data, marker = make_message()
    gw.send("sender@client.example.net", ["user@example.test"], data)
    gw.wait_for_marker(marker)
    wait_for(lambda: metrics(mport)[("mxgate_route_delivered_total", '{route="default"}')] == 1,
             scaled(5), what="route counter")
    m = metrics(mport)
    assert m[("mxgate_route_deferred_total", '{route="default"}')] == 0
    assert m[("mxgate_route_delivery_seconds_total", '{route="default"}')] >= 0


def test_delay_since_arrival_and_queue_by_state(gateway):
    port = mxtest.closed_port()
    mport = free_port()
    extra = relay_extra([f"127.0.0.1:{port}"], queue={"retry_schedule": "1s"})
    extra["metrics"] = {"listen": f"127.0.0.1:{mport}"}
    gw = gateway(extra)
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    gw.wait_log(qid + r" to=<a@example.test> route=default .* status=deferred")
    wait_for(lambda: metrics(mport)[("mxgate_queue_messages_by_state", '{state="deferred"}')]
             == 1, scaled(5), what="deferred gauge")
    m = metrics(mport)
    assert m[("mxgate_route_deferred_total", '{route="default"}')] >= 1
    with Downstream(port=port) as ds:
        wait_for(lambda: ds.find(marker), scaled(15), what="delivered after the retry")
    gw.wait_log(qid + r" to=<a@example.test> route=default .*status=sent")
    text = gw.log_text()
    sent = [ln for ln in text.splitlines() if qid in ln and "status=sent" in ln][0]
    mm = re.search(r" delay=([\d.]+) delays=([\d.]+)/([\d.]+)/([\d.]+) ", sent)
    assert mm, sent
    delay, q, c, t = (float(x) for x in mm.groups())
    # delay counts from arrival: the message waited in the queue for its
    # retry (retry_schedule 1s), which the first part of delays shows
    assert q >= 1 and delay >= q, sent
    assert abs(delay - (q + c + t)) <= 0.15, sent
    wait_for(lambda: metrics(mport)[("mxgate_route_delivered_total", '{route="default"}')] == 1,
             scaled(5), what="route delivered counter")


def test_quarantine_gauges_follow_at_once(gateway):
    """mxgate_quarantine_messages/_bytes/_oldest_age_seconds count a message
    as soon as it is quarantined and drop it as soon as it is released or
    deleted - they used to change only at the retention sweep (hourly with
    the default 30 days), so a scrape right after showed 0."""
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}"},
                  "attachments": {"enabled": "yes", "action": "quarantine"}})

    def quarantine():
        data, _ = make_message("q", headers=(
            "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b"),
            body="--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Disposition: attachment; filename=tool.exe\r\n\r\nMZ\r\n--b--\r\n")
        with gw.client() as c:
            c.ehlo()
            qid = mxtest.queued_id(c.transaction("sender@client.example.net",
                                                 ["user@example.test"], data))
        gw.wait_log(r"quarantined reason=attachment id=" + qid)
        return qid

    def gauge(name):
        return metrics(mport)[(name, "")]

    assert gauge("mxgate_quarantine_messages") == 0
    qid = quarantine()
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 1, scaled(5),
             what="quarantine gauge 1")
    m = metrics(mport)
    assert m[("mxgate_quarantine_bytes", "")] > 0
    assert m[("mxgate_quarantine_oldest_age_seconds", "")] >= 0
    assert m[("mxgate_queue_messages_by_state", '{state="quarantine"}')] == 1
    gw.cli("quarantine", "release", qid, check=True)
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 0, scaled(5),
             what="quarantine gauge 0 after the release")
    assert gauge("mxgate_quarantine_bytes") == 0
    qid = quarantine()
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 1, scaled(5),
             what="quarantine gauge 1 again")
    gw.cli("quarantine", "delete", qid, check=True)
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 0, scaled(5),
             what="quarantine gauge 0 after the delete")
    assert gauge("mxgate_quarantine_bytes") == 0
    assert gauge("mxgate_quarantine_oldest_age_seconds") == 0


def test_immediate_delivery_delay_counts_from_the_arrival_to_the_microsecond(gateway):
    """delay= is measured from the arrival (stored to the µs), not added up
    from delays=: a message delivered at once reports no more than the time
    that really passed - the old whole-second arrival added up to 1 s (the
    dot is sent late in a second, when that would show)."""
    gw = gateway()
    data, marker = make_message(sender=SENDER)
    body = data if data.endswith(b"\r\n") else data + b"\r\n"
    with gw.client() as c:
        c.ehlo("client.example.net")
        assert c.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        assert c.cmd("RCPT TO:<a@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(body)
        wait_for(lambda: 0.6 <= time.time() % 1 < 0.8, scaled(5), interval=0.005,
                 what="late in a second")
        start = time.time()
        c.send(b".\r\n")
        qid = mxtest.queued_id(c.reply())
    line = gw.wait_log(qid + r" to=<a@example.test> route=default .*status=sent.*").group(0)
    elapsed = time.time() - start
    mm = re.search(r" delay=([\d.]+) delays=([\d.]+)/([\d.]+)/([\d.]+) ", line)
    assert mm, line
    delay, q, c_, t = (float(x) for x in mm.groups())
    # at most the time that passed since the dot (printed to 0.1 s) ...
    assert delay <= elapsed + 0.05, (line, elapsed)
    # ... which for a delivery at once is well under half a second
    assert delay < 0.5 or elapsed >= 0.45, (line, elapsed)
    # and not less than its parts (each printed to 0.1 s)
    assert delay >= q + c_ + t - 0.15, line
