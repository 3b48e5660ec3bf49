"""Issue 7, observability: JSON logs (every line valid JSON, even with
hostile bytes), the summary line per message, Prometheus metrics over HTTP
after real traffic, `mxgate status`, `mxgate dns-records` and the MTA-STS
policy served over HTTPS."""

import http.client
import json
import re
import shutil
import signal
import socket
from pathlib import Path

from mxtest import (RawClient, assert_reply, client_tls_context, free_port, make_message,
                    make_test_ca, scaled, wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"

# Prometheus text format 0.0.4: comments, or name{labels} value
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                       r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? '
                       r'(-?[0-9.e+]+|[+-]Inf|NaN)$')


def scrape(port, path="/metrics", method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def parse_metrics(text):
    """{(name, labels-text): value}; asserts every line is well-formed."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, f"family typed twice: {line}"
            typed.add(name)
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"malformed sample line: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def test_json_logs_every_line_valid(gateway):
    # a config warning at start-up goes through the JSON log too
    gw = gateway({"log": {"format": "json", "level": "debug"},
                  "limits": {"max_connections": "50", "max_connections_per_ip": "60"}})
    data, marker = make_message(subject="json \u00e9t\u00e9")
    qid = gw.send(SENDER, [RCPT], data)
    with gw.client() as c:   # hostile bytes: invalid UTF-8, quotes, control chars
        c.send(b'EHLO bad\xff\xfe"\\\x01name\r\n')
        c.reply()
        c.send(b"MAIL FROM:<\xc3\x28@x.test>\r\n")
        c.reply()
        c.cmd("QUIT")
    gw.wait_for_marker(marker)
    gw.stop()
    raw = gw.log_path.read_bytes()
    text = raw.decode("utf-8")          # strict: JSON text is UTF-8 (RFC 8259 8.1)
    lines = [ln for ln in text.split("\n") if ln]
    assert len(lines) > 10
    recs = []
    for ln in lines:
        rec = json.loads(ln)
        # issue 16: structured members, not a text line wrapped in "msg"
        assert set(rec) >= {"ts", "level", "pid"} and "msg" not in rec, ln
        assert rec["level"] in ("error", "warn", "info", "debug")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"]), ln
        recs.append(rec)
    decision = [r for r in recs if r.get("event") == "queued" and r.get("queue_id") == qid]
    assert len(decision) == 1, "no decision record"
    d = decision[0]
    assert re.fullmatch(r"[0-9a-f]{16}", d["session"]), d
    assert d["client"] == "127.0.0.1" and d["helo"] == "client.example.net", d
    assert d["from"] == SENDER and d["to"] == RCPT, d
    assert isinstance(d["size"], int) and d["size"] >= len(data), d
    assert d["tls"] == "no" and "rdns" in d, d
    assert d["reply"].startswith("250 2.0.0 Ok: queued as " + qid), d
    # the session's other events share its id
    connect = [r for r in recs if r.get("event") == "connect" and r.get("session") == d["session"]]
    assert connect and connect[0]["client"] == "127.0.0.1", connect
    # the delivery: the queue id, the recipient, the relay, a numeric delay
    sent = [r for r in recs if r.get("queue_id") == qid and r.get("status") == "sent"]
    assert sent and sent[0]["to"] == RCPT and isinstance(sent[0]["delay"], (int, float)), sent
    # the Message-ID of the decision (brackets removed), delays= as its
    # three parts, none of which exceeds the delay
    assert d["message_id"] == f"{marker}@client.example.net", d
    assert re.fullmatch(r"\d+\.\d/\d+\.\d/\d+\.\d", sent[0]["delays"]), sent
    parts = [float(x) for x in sent[0]["delays"].split("/")]
    assert sent[0]["delay"] >= sum(parts) - 0.15, sent
    assert any("\ufffd" in json.dumps(r, ensure_ascii=False) for r in recs), \
        "invalid UTF-8 not replaced"
    assert any(r["level"] == "warn" and "max_connections_per_ip" in json.dumps(r) for r in recs)


def test_metrics_after_traffic(gateway):
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}"},
                  "access": {"deny": "127.0.0.2/32"}})
    markers = []
    for _ in range(2):
        data, marker = make_message()
        gw.send(SENDER, [RCPT], data)
        markers.append(marker)
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<someone@elsewhere.test>"), 550)
        # a message refused at the end of DATA: a bare LF inside
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n")
        r = c.reply()
        assert r.code >= 500, str(r)
        c.cmd("QUIT")
    with RawClient(gw.port, source="127.0.0.2") as c:
        assert c.banner.code == 554
    for m in markers:
        gw.wait_for_marker(m)

    def delivered():
        _, _, body = scrape(mport)
        return parse_metrics(body).get(("mxgate_delivery_attempts_total",
                                        '{outcome="delivered"}'), 0) >= 2
    wait_for(delivered, scaled(10), what="2 deliveries counted")
    status, ctype, body = scrape(mport)
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    m = parse_metrics(body)
    assert m[("mxgate_connections_total", "")] >= 4
    assert m[("mxgate_connections_refused_total", '{reason="access"}')] == 1
    assert m[("mxgate_messages_accepted_total", "")] == 2
    assert m[("mxgate_recipients_rejected_total", '{reason="relay_denied"}')] == 1
    assert sum(v for (n, _), v in m.items() if n == "mxgate_messages_rejected_total") == 1
    assert m[("mxgate_data_to_250_seconds_count", "")] == 2
    assert m[("mxgate_data_to_250_seconds_bucket", '{le="+Inf"}')] == 2
    assert m[("mxgate_delivery_seconds_count", "")] >= 2
    assert ("mxgate_queue_messages", "") in m
    assert ("mxgate_queue_oldest_age_seconds", "") in m
    assert ("mxgate_queue_recycled_bytes", "") in m
    assert m[("mxgate_connections_current", "")] >= 0
    for fam in ("mxgate_spf_results_total", "mxgate_dkim_results_total",
                "mxgate_dmarc_results_total", "mxgate_spam_verdicts_total"):
        assert f"# TYPE {fam} counter" in body
    # histogram buckets are cumulative
    les = [(k[1], v) for k, v in m.items() if k[0] == "mxgate_data_to_250_seconds_bucket"]
    vals = [v for _, v in les]
    assert vals == sorted(vals), les
    # anything but GET /metrics
    assert scrape(mport, "/")[0] == 404
    assert scrape(mport, "/metrics/x")[0] == 404
    assert scrape(mport, "/metrics", "POST")[0] in (404, 405)
    assert scrape(mport, "/metrics", "HEAD")[0] == 200


def test_metrics_count_auth_results(gateway):
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}"},
                  "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes",
                           "dmarc_enforcement": "monitor"}})
    gw.dns.add("client.example.net", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    data, marker = make_message(sender=SENDER)
    gw.send(SENDER, [RCPT], data)
    gw.wait_for_marker(marker)
    m = parse_metrics(scrape(mport)[2])
    assert m.get(("mxgate_spf_results_total", '{result="pass"}')) == 1, \
        {k: v for k, v in m.items() if "spf" in k[0]}
    assert sum(v for (n, _), v in m.items() if n == "mxgate_dkim_results_total") == 1
    assert sum(v for (n, _), v in m.items() if n == "mxgate_dmarc_results_total") == 1
    assert sum(v for (n, _), v in m.items() if n == "mxgate_spam_verdicts_total") == 1


def test_status_summary(gateway):
    gw = gateway()
    data, marker = make_message()
    gw.send(SENDER, [RCPT], data)
    gw.wait_for_marker(marker)
    with gw.client() as c:
        c.send(b"EHLO\r\n")        # a 501, not an error of the daemon
        c.reply()
    p = gw.cli("status", check=True)
    out = p.stdout
    for key in ("uptime:", "sessions:", "queue_messages:", "queue_oldest_age:",
                "connections_total:", "messages_accepted: 1", "last_errors:"):
        assert key in out, (key, out)
    # the delivered message's two files wait in free/ for reuse (once the
    # I/O thread has removed it: poll)
    wait_for(lambda: re.search(r"^queue_recycled_files: 2 \(\d+ KiB\)$",
                               gw.cli("status", check=True).stdout, re.M),
             scaled(5), what="queue_recycled_files: 2 in status")
    assert len(out.splitlines()) <= 25, "status must fit on one screen"


def test_dns_records(gateway, test_ca):
    # with a certificate: MTA-STS enforce without STARTTLS is an error (issue 16)
    gw = gateway({"domains": {"accepted_domains": "example.test, other.test"},
                  "mta_sts": {"mx_hosts": "mx1.example.test, mx2.example.test",
                              "tlsrpt_rua": "mailto:tls@reports.example.test"}},
                 start=False, tls=test_ca)
    p = gw.cli("dns-records", check=True)
    out = p.stdout
    records = [ln for ln in out.splitlines() if ln and not ln.startswith(";")]
    for d in ("example.test", "other.test"):
        assert f"{d}.\t300\tIN\tMX\t10 mx1.example.test." in records
        assert f"{d}.\t300\tIN\tMX\t10 mx2.example.test." in records
        assert any(r.startswith(f"_dmarc.{d}.") and '"v=DMARC1; p=none;' in r for r in records)
        assert any(r.startswith(f"_mta-sts.{d}.") and re.search(r'"v=STSv1; id=[0-9a-f]{20}"', r)
                   for r in records)
        assert f'_smtp._tls.{d}.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:tls@reports.example.test"' \
            in records
    assert f'{gw.hostname}.\t3600\tIN\tTXT\t"v=spf1 a -all"' in records
    assert ";   mode: testing" in out
    assert ";   mx: mx1.example.test" in out and ";   mx: mx2.example.test" in out
    # every record line is zone-file shaped: owner TTL IN TYPE data
    for r in records:
        assert re.match(r"^\S+\.\t\d+\tIN\t(MX|TXT|A|CNAME)\t", r), r
    # the id follows the policy: enforce mode gives another id
    ids1 = set(re.findall(r"id=([0-9a-f]{20})", out))
    gw.set_extra({"domains": {"accepted_domains": "example.test"},
                  "mta_sts": {"mode": "enforce", "mx_hosts": "mx1.example.test"}})
    out2 = gw.cli("dns-records", check=True).stdout
    ids2 = set(re.findall(r"id=([0-9a-f]{20})", out2))
    assert len(ids1) == 1 and len(ids2) == 1 and ids1 != ids2
    assert ";   mode: enforce" in out2
    bad = gw.cli("dns-records", "--bogus")
    assert bad.returncode == 2


def test_mta_sts_policy_over_https(gateway, test_ca):
    hport = free_port()
    gw = gateway({"mta_sts": {"listen": f"127.0.0.1:{hport}", "mx_hosts": "mx.example.test"}},
                 tls=test_ca)
    ctx = client_tls_context(ca_file=test_ca.ca_cert)
    c = http.client.HTTPSConnection("127.0.0.1", hport, timeout=scaled(5), context=ctx)
    c.request("GET", "/.well-known/mta-sts.txt", headers={"Host": "mta-sts.example.test"})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain")
    assert body == ("version: STSv1\r\nmode: testing\r\nmx: mx.example.test\r\n"
                    "max_age: 86400\r\n")
    c = http.client.HTTPSConnection("127.0.0.1", hport, timeout=scaled(5), context=ctx)
    c.request("GET", "/other")
    assert c.getresponse().status == 404
    c.close()
    # a renewed certificate is served after a reload
    ca2 = make_test_ca(Path(test_ca.ca_cert).parent.parent / "ca2")
    shutil.copy(ca2.chain, test_ca.chain)
    shutil.copy(ca2.key, test_ca.key)
    n = gw.log_text().count("- reloaded config")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.log_text().count("- reloaded config") > n, scaled(5), what="reload")
    c = http.client.HTTPSConnection("127.0.0.1", hport, timeout=scaled(5),
                                    context=client_tls_context(ca_file=ca2.ca_cert))
    c.request("GET", "/.well-known/mta-sts.txt")
    assert c.getresponse().status == 200
    c.close()
    # plain HTTP on the TLS port is not served
    with socket.create_connection(("127.0.0.1", hport), timeout=scaled(5)) as s:
        s.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.0\r\n\r\n")
        try:
            got = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            got = b""
        assert b"STSv1" not in got
