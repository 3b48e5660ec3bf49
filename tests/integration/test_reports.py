"""The DMARC report store (issue 14, RFC 9990), black-box: real SMTP to the
real mxgate with `[reports] record = yes`, a real DNS server publishing SPF,
DKIM and DMARC records, then the SQLite store in the queue directory read
back with Python's sqlite3.

Covered: every DMARC evaluation is recorded - accepted, quarantined and
refused at end of data alike - with the facts an aggregate report needs
(source IP, identifiers, SPF/DKIM results with domains and selectors,
alignment, the published policy, the disposition and the override reason);
the schema is migrated and WAL; a writer that cannot write (the database
locked by another process) makes rows drop and be counted, while SMTP goes
on answering; a report run waiting on DNS longer than the writer's busy
timeout holds no write lock, so nothing recorded meanwhile is lost.  The
reports sent: signed, valid, once, with a domain name as the subject's
Submitter; what a run leaves in the store (reports, refusals, runs, the
outbox's messages) is pruned with the evaluations.  A DMARC quarantine
turned into a 550 by [spam] quarantine_action = reject is recorded as
reject.
"""

import sqlite3
import urllib.request

import pytest

import dnsserver
import mxtest
from downstream import Downstream, outbound_route

RCPT = "user@example.test"
RUA_MX = "127.0.0.3"


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = tmp_path_factory.mktemp("reportsdns")
    srv = dnsserver.UnboundServer(d)
    key, txt = dnsserver.make_dkim_key(d, 2048, "sel1")
    srv.add_txt("sel1._domainkey.dk.test", txt)
    srv.add("dk.test", "TXT", "v=spf1 -all")
    srv.add("_dmarc.dk.test", "TXT", "v=DMARC1; p=none; adkim=s; rua=mailto:r@dk.test")
    # report destinations: rua.test (external, verified) and dk.test itself
    # have their MX on 127.0.0.3; unverified.test publishes no agreement
    srv.add("rua.test", "MX", "10 mx.rua.test.")
    srv.add("dk.test", "MX", "10 mx.rua.test.")
    srv.add("mx.rua.test", "A", RUA_MX)
    srv.add("pass.test._report._dmarc.rua.test", "TXT", "v=DMARC1")
    srv.add("unverified.test", "MX", "10 mx.rua.test.")
    # zslow.test: its report destination's agreement lookup never answers
    # (the run waits the DNS timeout there: time to kill it mid-run)
    srv.add("_dmarc.zslow.test", "TXT", "v=DMARC1; p=none; rua=mailto:x@slowrua.test")
    srv.add("zslow.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    srv.blackhole("slowrua.test")
    # the same for test_slow_run_loses_no_evaluation, a zone of its own: the
    # resolver may remember that slowrua.test never answers
    srv.add("_dmarc.zslow2.test", "TXT", "v=DMARC1; p=none; rua=mailto:x@slowrua2.test")
    srv.add("zslow2.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    srv.blackhole("slowrua2.test")
    # tiny.test takes reports of at most 1 KiB: ours are bigger
    srv.add("_dmarc.tiny.test", "TXT", "v=DMARC1; p=none; rua=mailto:t@tiny.test!1k")
    srv.add("tiny.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    srv.add("tiny.test", "MX", "10 mx.rua.test.")
    srv.add("pass.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    srv.add("_dmarc.pass.test", "TXT",
            "v=DMARC1; p=reject; sp=quarantine; np=reject; t=y; psd=n; aspf=r; "
            "rua=mailto:agg@rua.test!10m")
    for dom, rec in [("drej.test", "v=DMARC1; p=reject"),
                     ("dquar.test", "v=DMARC1; p=quarantine; rua=mailto:x@unverified.test"),
                     ("exempt.test", "v=DMARC1; p=reject")]:
        srv.add("_dmarc." + dom, "TXT", rec)
        srv.add(dom, "TXT", "v=spf1 -all")
    srv.add("none.test", "A", "192.0.2.1")
    # bücher.test (RFC 8616): published under its A-labels
    srv.add("xn--bcher-kva.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    srv.add("_dmarc.xn--bcher-kva.test", "TXT", "v=DMARC1; p=none")
    srv.start()
    srv.dkim_key = key
    yield srv
    srv.close()


def gateway(tmp_path, dns, sink_port=None, name="gw", dns_timeout="2s", spam=None,
            **reports):
    mport = mxtest.free_port()
    r = {"record": "yes", "email": "dmarc-reports@mx.example.test", "org_name": "Example Gate"}
    r.update(reports)
    extra = {"dns": {"forwarders": dns.forwarder, "timeout": dns_timeout},
             "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes",
                      "dmarc_exempt_domains": "exempt.test"},
             "metrics": {"listen": f"127.0.0.1:{mport}"},
             "reports": r}
    if sink_port:
        extra["route outbound"] = outbound_route(sink_port)
    if spam:
        extra["spam"] = spam
    gw = mxtest.Gateway(tmp_path / name, extra, dns=False)
    gw.metrics_port = mport
    return gw


def metric(gw, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                  timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def db_rows(gw):
    con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM evaluation ORDER BY id")]
        for r in rows:
            r["dkim"] = [tuple(x) for x in con.execute(
                "SELECT domain, selector, result FROM evaluation_dkim WHERE evaluation_id=?",
                (r["id"],))]
        return rows
    finally:
        con.close()


def store(gw, sql):
    """The rows sql returns from the gateway's SQLite store (read beside
    the running daemon: WAL)."""
    con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
    try:
        return [tuple(r) for r in con.execute(sql)]
    finally:
        con.close()


def refused(gw, mail_from, msg):
    with gw.client() as c:
        c.ehlo("client.example.net")
        return c.transaction(mail_from, [RCPT], msg, expect_queued=False)


def test_every_evaluation_recorded(tmp_path, dns):
    gw = gateway(tmp_path, dns).start()
    try:
        # pass: SPF aligned
        msg, _ = mxtest.make_message(sender="a@pass.test")
        gw.send("a@pass.test", [RCPT], msg)
        # DKIM pass, strictly aligned, SPF fail
        msg, _ = mxtest.make_message(sender="b@dk.test")
        sig = dnsserver.dkim_sign(msg, "sel1", "dk.test", dns.dkim_key)
        gw.send("b@dk.test", ["User@Example.TEST"], sig + msg)
        # fail, p=quarantine: queued as spam
        msg, _ = mxtest.make_message(sender="c@dquar.test")
        gw.send("c@dquar.test", [RCPT], msg)
        # fail, p=reject: refused at end of data, recorded all the same
        msg, _ = mxtest.make_message(sender="d@drej.test")
        mxtest.assert_reply(refused(gw, "d@drej.test", msg), 550, "5.7.1")
        # fail, p=reject, but exempt by local policy
        msg, _ = mxtest.make_message(sender="e@exempt.test")
        gw.send("e@exempt.test", [RCPT], msg)
        # no DMARC record
        msg, _ = mxtest.make_message(sender="f@none.test")
        gw.send("", [RCPT], msg)
        # IDN envelope and From (SMTPUTF8): recorded as A-labels (RFC 8616)
        msg, _ = mxtest.make_message(sender="g@bücher.test")
        gw.send("g@bücher.test", [RCPT], msg, mail_params="SMTPUTF8")
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 7,
                        mxtest.scaled(10), what="seven rows written")
        assert metric(gw, "mxgate_reports_dropped_total") == 0
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    rows = {r["header_from"]: r for r in db_rows(gw)}
    assert sorted(rows) == ["dk.test", "dquar.test", "drej.test", "exempt.test", "none.test",
                            "pass.test", "xn--bcher-kva.test"], rows.keys()
    for r in rows.values():
        assert r["source_ip"] == "127.0.0.1"
        assert r["envelope_to"] == "example.test"
    p = rows["pass.test"]
    assert (p["dmarc"], p["disposition"], p["spf_aligned"], p["dkim_aligned"]) == \
        ("pass", "none", 1, 0)
    assert (p["spf_domain"], p["spf_result"], p["spf_scope"]) == ("pass.test", "pass", "mfrom")
    assert p["envelope_from"] == "pass.test"
    # the policy published as the RFC 9989 evaluator read it (defaults
    # filled in: adkim=r; pct ignored), found by the tree walk
    assert (p["policy_domain"], p["p"], p["sp"], p["np"], p["testing"], p["psd"], p["aspf"],
            p["adkim"]) == ("pass.test", "reject", "quarantine", "reject", "y", "n", "r", "r")
    assert p["discovery_method"] == "treewalk" and p["pct"] is None and p["override_type"] is None
    k = rows["dk.test"]
    assert (k["dmarc"], k["dkim_aligned"], k["spf_aligned"], k["adkim"]) == ("pass", 1, 0, "s")
    assert k["dkim"] == [("dk.test", "sel1", "pass")]
    assert (k["spf_domain"], k["spf_result"]) == ("dk.test", "fail")
    q = rows["dquar.test"]
    assert (q["dmarc"], q["p"], q["disposition"]) == ("fail", "quarantine", "quarantine")
    j = rows["drej.test"]
    assert (j["dmarc"], j["p"], j["disposition"], j["override_type"]) == \
        ("fail", "reject", "reject", None)
    x = rows["exempt.test"]
    assert (x["dmarc"], x["disposition"], x["override_type"]) == \
        ("fail", "none", "local_policy")
    assert "exempt domain exempt.test" in x["override_comment"]
    i = rows["xn--bcher-kva.test"]
    assert (i["envelope_from"], i["spf_domain"], i["spf_result"], i["spf_aligned"],
            i["dmarc"]) == ("xn--bcher-kva.test", "xn--bcher-kva.test", "pass", 1, "pass"), i
    n = rows["none.test"]
    assert (n["dmarc"], n["policy_domain"], n["p"], n["envelope_from"]) == \
        ("none", None, None, None)

    con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [v for (v,) in con.execute("SELECT version FROM schema_migrations")] == \
            [1, 2, 3, 4, 5, 6]   # 4-6: the reports mailed to us (issue 15)
    finally:
        con.close()


def test_quarantine_action_reject_records_reject(tmp_path, dns):
    """[spam] quarantine_action = reject refuses a DMARC p=quarantine
    failure with 550: the evaluation's disposition is what was applied,
    reject (stricter than the policy: local_policy), not quarantine."""
    gw = gateway(tmp_path, dns, spam={"quarantine_action": "reject"}).start()
    try:
        msg, _ = mxtest.make_message(sender="c@dquar.test")
        mxtest.assert_reply(refused(gw, "c@dquar.test", msg), 550, "5.7.1")
        msg, _ = mxtest.make_message(sender="d@drej.test")
        mxtest.assert_reply(refused(gw, "d@drej.test", msg), 550, "5.7.1")
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 2,
                        mxtest.scaled(10), what="two rows written")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
    rows = {r["header_from"]: r for r in db_rows(gw)}
    q = rows["dquar.test"]
    assert (q["dmarc"], q["p"], q["disposition"], q["override_type"]) == \
        ("fail", "quarantine", "reject", "local_policy"), q
    j = rows["drej.test"]
    assert (j["dmarc"], j["p"], j["disposition"], j["override_type"]) == \
        ("fail", "reject", "reject", None), j


def test_slow_run_loses_no_evaluation(tmp_path, dns):
    """A report run that waits on DNS - zslow2.test's destination's
    agreement lookup never answers, and the DNS timeout (8 s) is longer
    than the store's busy timeout (5 s) - holds no write lock meanwhile:
    the evaluations recorded during the run are all written, none lost,
    none dropped."""
    sink = Downstream(host=RUA_MX).start()
    gw = gateway(tmp_path, dns, sink_port=sink.port, dns_timeout="8s").start()
    try:
        msg, _ = mxtest.make_message(sender="a@pass.test")
        gw.send("a@pass.test", [RCPT], msg)
        msg, _ = mxtest.make_message(sender="z@zslow2.test")
        gw.send("z@zslow2.test", [RCPT], msg)
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 2,
                        mxtest.scaled(10), what="rows written")
        import subprocess
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        # pass.test's report is built; the run now waits on zslow2.test's DNS
        gw.wait_log(r"reports domain=pass\.test report_id=\w+ rua=agg@rua\.test")
        for _ in range(3):
            msg, _ = mxtest.make_message(sender="a@pass.test")
            gw.send("a@pass.test", [RCPT], msg)
        gw.wait_log(r"reports domain=zslow2\.test rua=x@slowrua2\.test not verified",
                    mxtest.scaled(20))
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") +
                        metric(gw, "mxgate_reports_dropped_total") >= 5,
                        mxtest.scaled(10), what="the rows of the run's time")
        assert metric(gw, "mxgate_reports_write_errors_total") == 0
        assert metric(gw, "mxgate_reports_dropped_total") == 0
        gw.wait_log(r"reports run recorded begin=\d+ end=\d+ reports=2 messages=1")
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20), what="the report")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert len(db_rows(gw)) == 5
    assert store(gw, "SELECT coalesce(sum(n), 0) FROM dropped") == [(0,)]


def test_usage_and_man_page_list_reports_commands():
    """Every `mxgate reports` subcommand (as its own usage names them) is
    in `mxgate --help` and in mxgate(8) (deploy/debian/mxgate.8), synopsis
    and COMMANDS."""
    import re
    import subprocess
    own = subprocess.run([str(mxtest.mxgate_bin()), "reports"], capture_output=True,
                         text=True, timeout=30)
    assert own.returncode == 2
    subs = set()
    for alt in re.findall(r"mxgate reports (\S+)", own.stderr):
        subs.update(alt.split("|"))
    assert subs == {"preview", "send-now", "status", "inbound"}, own.stderr
    top = subprocess.run([str(mxtest.mxgate_bin()), "--help"], capture_output=True,
                         text=True, timeout=30)
    assert top.returncode == 2
    man = (mxtest.source_dir() / "deploy" / "debian" / "mxgate.8").read_text()
    man = man.replace("\\-", "-").replace("\\fI", "").replace("\\fR", "")
    synopsis = man.split(".SH SYNOPSIS")[1].split(".SH DESCRIPTION")[0]
    commands = man.split(".SH COMMANDS")[1].split(".SH EXIT STATUS")[0]
    for sub in subs:
        assert re.search(rf"mxgate reports [^\n]*\b{sub}\b", top.stderr), (sub, top.stderr)
        assert re.search(rf"^\.BR? \"?mxgate reports[^\n]*\b{sub}\b", synopsis, re.M), sub
        assert re.search(rf"^\.B reports {sub}\b", commands, re.M), sub


def test_restart_keeps_rows_and_migrates_once(tmp_path, dns):
    gw = gateway(tmp_path, dns)
    try:
        for _ in range(2):
            gw.start()
            msg, _ = mxtest.make_message(sender="a@pass.test")
            gw.send("a@pass.test", [RCPT], msg)
            assert gw.stop() in (0, None), gw.log_tail(40)
    finally:
        gw.close()
    assert len(db_rows(gw)) == 2
    assert gw.log_text().count("reports migration=1 applied") == 1


def test_full_writer_queue_drops_and_counts_never_blocks(tmp_path, dns):
    gw = gateway(tmp_path, dns, queue_size="2").start()
    sent = 8
    try:
        # Another process holds the write lock: the writer thread waits
        # (busy timeout) on its first batch, the queue fills up.
        lock = sqlite3.connect(str(gw.queue_dir / "reports.db"), isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            for i in range(sent):
                msg, _ = mxtest.make_message(sender="a@pass.test")
                gw.send("a@pass.test", [RCPT], msg)   # 250 every time
            dropped = metric(gw, "mxgate_reports_dropped_total")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # at most one batch in the writer's hands plus two queued
        assert dropped >= sent - 1 - 2 - 1, dropped
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") +
                        metric(gw, "mxgate_reports_dropped_total") >= sent,
                        mxtest.scaled(15), what="the writer catching up")
        # a batch that waited out the busy timeout is a drop too
        dropped = metric(gw, "mxgate_reports_dropped_total")
        assert dropped >= metric(gw, "mxgate_reports_write_errors_total")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
    con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
    try:
        in_table = con.execute("SELECT coalesce(sum(n), 0) FROM dropped").fetchone()[0]
    finally:
        con.close()
    # the drops are in the store too, for the report's metadata
    assert in_table == dropped


def preview(gw, domain):
    import subprocess
    return subprocess.run([str(mxtest.mxgate_bin()), "reports", "preview", domain, "-c",
                           str(gw.config_path)], capture_output=True, timeout=30)


def test_preview_aggregates_and_validates(tmp_path, dns):
    import subprocess
    import xml.etree.ElementTree as ET
    gw = gateway(tmp_path, dns).start()
    try:
        # pass.test: 3 from 127.0.0.1, 2 from 127.0.0.2 (SPF pass, aligned)
        for src, n in (("127.0.0.1", 3), ("127.0.0.2", 2)):
            for _ in range(n):
                msg, _ = mxtest.make_message(sender="a@pass.test")
                gw.send("a@pass.test", [RCPT], msg, source=src)
        # dk.test: one DKIM-signed (aligned), one unsigned (fails, p=none)
        msg, _ = mxtest.make_message(sender="b@dk.test")
        gw.send("b@dk.test", [RCPT], dnsserver.dkim_sign(msg, "sel1", "dk.test",
                                                         dns.dkim_key) + msg)
        msg, _ = mxtest.make_message(sender="b@dk.test")
        gw.send("b@dk.test", [RCPT], msg)
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 7,
                        mxtest.scaled(10), what="seven rows written")
        xsd = mxtest.source_dir() / "tests" / "data" / "rfc9990-dmarc.xsd"
        ns = {"d": "urn:ietf:params:xml:ns:dmarc-2.0"}
        got = {}
        for dom in ("pass.test", "dk.test"):
            r = preview(gw, dom)   # beside the running daemon
            assert r.returncode == 0, r.stderr
            f = tmp_path / f"{dom}.xml"
            f.write_bytes(r.stdout)
            v = subprocess.run(["xmllint", "--noout", "--schema", str(xsd), str(f)],
                               capture_output=True, timeout=30)
            assert v.returncode == 0, v.stderr.decode() + r.stdout.decode()
            got[dom] = ET.fromstring(r.stdout)
        # a domain nothing was recorded for: no report
        assert preview(gw, "nothing.test").returncode == 1
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    root = got["pass.test"]
    assert root.find("d:policy_published/d:domain", ns).text == "pass.test"
    assert root.find("d:policy_published/d:p", ns).text == "reject"
    assert root.find("d:policy_published/d:np", ns).text == "reject"
    assert root.find("d:policy_published/d:testing", ns).text == "y"
    assert root.find("d:report_metadata/d:org_name", ns).text == "Example Gate"
    counts = {rec.find("d:row/d:source_ip", ns).text: int(rec.find("d:row/d:count", ns).text)
              for rec in root.findall("d:record", ns)}
    assert counts == {"127.0.0.1": 3, "127.0.0.2": 2}, counts
    for rec in root.findall("d:record", ns):
        assert rec.find("d:row/d:policy_evaluated/d:disposition", ns).text == "pass"
        assert rec.find("d:row/d:policy_evaluated/d:spf", ns).text == "pass"
        assert rec.find("d:row/d:policy_evaluated/d:dkim", ns).text == "fail"
        assert rec.find("d:auth_results/d:spf/d:scope", ns).text == "mfrom"
    k = got["dk.test"]
    recs = k.findall("d:record", ns)
    assert len(recs) == 2
    by_dkim = {rec.find("d:row/d:policy_evaluated/d:dkim", ns).text: rec for rec in recs}
    assert set(by_dkim) == {"pass", "fail"}
    signed = by_dkim["pass"]
    assert signed.find("d:row/d:count", ns).text == "1"
    assert signed.find("d:auth_results/d:dkim/d:selector", ns).text == "sel1"
    assert signed.find("d:auth_results/d:dkim/d:result", ns).text == "pass"
    unsigned = by_dkim["fail"]
    assert unsigned.find("d:row/d:policy_evaluated/d:disposition", ns).text == "none"
    assert unsigned.find("d:auth_results/d:dkim", ns) is None


def report_key_record(gw):
    """The TXT text `mxgate dns-records` prints for the report signing key."""
    import re
    import subprocess
    out = subprocess.run([str(mxtest.mxgate_bin()), "dns-records", "-c", str(gw.config_path)],
                         capture_output=True, timeout=30, check=True).stdout.decode()
    for line in out.splitlines():
        if line.startswith("mxgate-reports._domainkey.mx.example.test.\t"):
            return "".join(re.findall(r'"([^"]*)"', line))
    raise AssertionError(out)


def test_reports_sent_signed_valid_and_once(tmp_path, dns):
    import email
    import email.policy
    import gzip
    import re
    import subprocess
    import xml.etree.ElementTree as ET
    import dkim

    sink = Downstream(host=RUA_MX).start()
    # retention 0: what a run reported is deleted at the end of that run
    gw = gateway(tmp_path, dns, sink_port=sink.port, retention="0").start()
    try:
        for _ in range(3):
            msg, _ = mxtest.make_message(sender="a@pass.test")
            gw.send("a@pass.test", [RCPT], msg)
        msg, _ = mxtest.make_message(sender="b@dk.test")
        gw.send("b@dk.test", [RCPT], dnsserver.dkim_sign(msg, "sel1", "dk.test",
                                                         dns.dkim_key) + msg)
        msg, _ = mxtest.make_message(sender="c@dquar.test")
        gw.send("c@dquar.test", [RCPT], msg)
        msg, _ = mxtest.make_message(sender="t@tiny.test")
        gw.send("t@tiny.test", [RCPT], msg)
        keyrec = report_key_record(gw)
        # the start-up run (no complete period missed: nothing to report)
        # is run 0; the send-now runs below come after it
        gw.wait_log(r"reports run recorded begin=\d+ end=\d+ reports=0 ")
        n0 = gw.log_text().count("reports run begin=")
        # a reload swaps the config under the sender (ASan catches a stale one)
        r = subprocess.run([str(mxtest.mxgate_bin()), "reload", "-c", str(gw.config_path)],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: len(sink.messages) >= 2, mxtest.scaled(20),
                        what="two reports at the rua MX")
        gw.wait_log(r"reports domain=dquar\.test rua=x@unverified\.test not verified")
        gw.wait_log(r"reports domain=tiny\.test rua=t@tiny\.test size=\d+ over the limit 1024")
        st = subprocess.run([str(mxtest.mxgate_bin()), "reports", "status", "-c",
                             str(gw.config_path)], capture_output=True, timeout=30)
        assert st.returncode == 0, st.stderr
        status = st.stdout.decode()
        for dom in ("pass.test", "dk.test", "dquar.test", "tiny.test"):
            assert re.search(rf"^sent: {re.escape(dom)} last-period-end=\d+ reports=1$", status,
                             re.M), status
        assert "pending:" not in status and "dropped-since-last-run: 0" in status, status
        assert re.search(r"^refused: dquar\.test rua=x@unverified\.test reason=unverified "
                         r"runs=1 last=\d+$", status, re.M), status
        assert re.search(r"^refused: tiny\.test rua=t@tiny\.test reason=too_big runs=1 ", status,
                         re.M), status
        # once queued, the outbox keeps the report id and state, not the message
        mxtest.wait_for(lambda: store(gw, "SELECT count(*) FROM outbox WHERE queued = 0")
                        == [(0,)], mxtest.scaled(10), what="the outbox marked")
        assert store(gw, "SELECT count(*), max(length(msg)) FROM outbox") == [(2, 0)]
        # a second run has nothing new: no report is sent twice.  It ends a
        # second later than the first (a run covers up to its second), so
        # the first run's rows are older than its cut-off
        import time
        e1 = store(gw, "SELECT max(end_t) FROM report_run")[0][0]
        mxtest.wait_for(lambda: time.time() >= e1, mxtest.scaled(5), what="the next second")
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: gw.log_text().count("reports run begin=") >= n0 + 2,
                        mxtest.scaled(10), what="the second run")
        assert re.findall(r"reports run begin=\d+ end=\d+ domains=(\d+)",
                          gw.log_text())[n0 + 1] == "0"
        # retention 0: the six reported evaluations are gone, and with them
        # the first run's reports, refusals, run row and outbox rows; the
        # second run's row stays (the next run begins at its end)
        gw.wait_log(r"reports pruned evaluations=6 ")
        assert db_rows(gw) == []
        runs = store(gw, "SELECT begin_t, end_t FROM report_run")
        assert len(runs) == 1 and runs[0][0] < runs[0][1], runs
        assert store(gw, "SELECT (SELECT count(*) FROM report), (SELECT count(*) FROM refused),"
                         " (SELECT count(*) FROM outbox)") == [(0, 0, 0)]
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: gw.log_text().count("reports run begin=") >= n0 + 3,
                        mxtest.scaled(10), what="the third run")
        assert re.findall(r"reports run begin=(\d+)", gw.log_text())[n0 + 2] == str(runs[0][1])
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert len(sink.messages) == 2, [m.rcpt_tos for m in sink.messages]
    by_rcpt = {m.rcpt_tos[0]: m for m in sink.messages}
    assert set(by_rcpt) == {"agg@rua.test", "r@dk.test"}
    xsd = mxtest.source_dir() / "tests" / "data" / "rfc9990-dmarc.xsd"
    ns = {"d": "urn:ietf:params:xml:ns:dmarc-2.0"}
    counts = {}
    for rcpt, rec in by_rcpt.items():
        raw = rec.data if isinstance(rec.data, bytes) else rec.data.encode()
        assert rec.mail_from == "dmarc-reports@mx.example.test"
        # DKIM-signed with mxgate's report key, verified by dkimpy
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: keyrec.encode()), rcpt
        m = email.message_from_bytes(raw, policy=email.policy.default)
        dom = "pass.test" if rcpt == "agg@rua.test" else "dk.test"
        # Submitter: a domain name, the report generator's (RFC 7489 7.2.1.1
        # dmarc-subject), not the org_name
        sm = re.fullmatch(r"Report Domain: (\S+) Submitter: mx\.example\.test "
                          r"Report-ID: <(\w+)>", str(m["Subject"]))
        assert sm and sm.group(1) == dom, m["Subject"]
        att = [p for p in m.iter_attachments()]
        assert len(att) == 1 and att[0].get_content_type() == "application/gzip"
        fn = re.fullmatch(r"mx\.example\.test!(\S+)!(\d+)!(\d+)!(\w+)\.xml\.gz",
                          att[0].get_filename())
        assert fn and fn.group(1) == dom and fn.group(4) == sm.group(2), att[0].get_filename()
        xml = gzip.decompress(att[0].get_content())
        f = tmp_path / f"{dom}.sent.xml"
        f.write_bytes(xml)
        v = subprocess.run(["xmllint", "--noout", "--schema", str(xsd), str(f)],
                           capture_output=True, timeout=30)
        assert v.returncode == 0, v.stderr.decode()
        root = ET.fromstring(xml)
        assert root.find("d:report_metadata/d:report_id", ns).text == sm.group(2)
        assert root.find("d:report_metadata/d:email", ns).text == \
            "dmarc-reports@mx.example.test"
        counts[dom] = sum(int(c.text) for c in root.findall("d:record/d:row/d:count", ns))
    assert counts == {"pass.test": 3, "dk.test": 1}, counts



# ------------------------------------------------------------ PostgreSQL (a fleet)

@pytest.fixture
def postgres():
    """A real PostgreSQL server (initdb + pg_ctl) on a unix socket in a
    temporary directory, no TCP; run as the postgres user when we are root
    (initdb refuses root).  Yields a libpq URI."""
    import glob
    import os
    import shutil
    import subprocess
    import tempfile
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server not installed (Debian package postgresql)")
    bindir = os.path.dirname(bins[-1])
    d = tempfile.mkdtemp(prefix="mxpg", dir="/tmp")
    as_user = []
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = mxtest.free_port()
    subprocess.run(as_user + [f"{bindir}/initdb", "-D", f"{d}/data", "-A", "trust", "-U", "mxgate",
                              "--no-sync", "-E", "UTF8"], check=True, capture_output=True,
                   timeout=120)
    subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w",
                              "-o", f"-k {d} -c listen_addresses='' -p {port} -F", "start"],
                   check=True, capture_output=True, timeout=120)
    ctl = as_user + [f"{bindir}/pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w"]

    class Uri(str):
        """The URI; stop() and start() take the server down and up again."""
        def stop(self):
            subprocess.run(ctl + ["-m", "fast", "stop"], check=True, capture_output=True,
                           timeout=60)

        def start(self):
            subprocess.run(ctl + ["-o", f"-k {d} -c listen_addresses='' -p {port} -F",
                                  "start"], check=True, capture_output=True, timeout=120)
    try:
        yield Uri(f"postgresql://mxgate@/postgres?host={d}&port={port}")
    finally:
        subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", f"{d}/data", "-m", "immediate",
                                  "stop"], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def test_postgresql_fleet_one_report_with_every_node(tmp_path, dns, postgres):
    import re
    import email
    import email.policy
    import gzip
    import subprocess
    import xml.etree.ElementTree as ET

    sink = Downstream(host=RUA_MX).start()
    # retention 0: a run prunes what the runs before it reported
    a = gateway(tmp_path, dns, sink_port=sink.port, name="a", database=postgres,
                retention="0").start()
    b = gateway(tmp_path, dns, sink_port=sink.port, name="b", database=postgres,
                retention="0").start()

    def q(sql):
        r = subprocess.run(["psql", postgres, "-At", "-F", "|", "-c", sql],
                           capture_output=True, timeout=30, text=True)
        assert r.returncode == 0, r.stderr
        return [line.split("|") for line in r.stdout.splitlines()]
    try:
        for gw, n in ((a, 2), (b, 3)):
            for _ in range(n):
                msg, _ = mxtest.make_message(sender="a@pass.test")
                gw.send("a@pass.test", [RCPT], msg)
        for gw, n in ((a, 2), (b, 3)):
            mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= n,
                            mxtest.scaled(10), what="rows written")
        # both nodes end the period at the same moment (after their
        # start-up runs, which found no complete period to report)
        rx = r"reports run (begin=|skipped: another node)"
        for gw in (a, b):
            gw.wait_log(rx, mxtest.scaled(15))
        nrx = [len(re.findall(rx, gw.log_text())) for gw in (a, b)]
        procs = [subprocess.Popen([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                                   str(gw.config_path)]) for gw in (a, b)]
        assert [p.wait(timeout=30) for p in procs] == [0, 0]
        for gw, n in zip((a, b), nrx):
            mxtest.wait_for(lambda: len(re.findall(rx, gw.log_text())) > n, mxtest.scaled(15),
                            what="the send-now run")
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20), what="a report")
        for gw in (a, b):
            mxtest.wait_for(lambda: not gw.queue_ids(), mxtest.scaled(20), what="queues empty")
        logs = [gw.log_text() for gw in (a, b)]
        assert all("reports store=postgresql" in t for t in logs)
        # one node made the report; the other skipped or found nothing left
        made = [t.count("reports domain=pass.test report_id=") for t in logs]
        assert sorted(made) == [0, 1], made
        # queued: the outbox keeps the id and state, not the message
        mxtest.wait_for(lambda: q("SELECT count(*) FROM outbox WHERE queued = 0") == [["0"]],
                        mxtest.scaled(10), what="the outbox marked")
        assert q("SELECT count(*), max(length(msg)) FROM outbox") == [["1", "0"]]
        # a later run prunes the first one's report, run row and outbox row
        # and keeps its own run row, where the next run begins (it ends a
        # second later: the first run's rows are older than its cut-off)
        import time
        e1 = int(q("SELECT max(end_t) FROM report_run")[0][0])
        mxtest.wait_for(lambda: time.time() >= e1, mxtest.scaled(5), what="the next second")
        nruns = a.log_text().count("reports run begin=")
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(a.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: a.log_text().count("reports run begin=") > nruns,
                        mxtest.scaled(10), what="node a's second run")
        mxtest.wait_for(lambda: q("SELECT (SELECT count(*) FROM report), (SELECT count(*)"
                                  " FROM outbox), (SELECT count(*) FROM report_run),"
                                  " (SELECT count(*) FROM evaluation)") == [["0", "0", "1", "0"]],
                        mxtest.scaled(10), what="the first run's rows pruned")
    finally:
        for gw in (a, b):
            assert gw.stop() in (0, None), gw.log_tail(40)
            gw.close()
        sink.stop()
    assert len(sink.messages) == 1, [m.rcpt_tos for m in sink.messages]
    raw = sink.messages[0].data
    raw = raw if isinstance(raw, bytes) else raw.encode()
    m = email.message_from_bytes(raw, policy=email.policy.default)
    att = list(m.iter_attachments())
    root = ET.fromstring(gzip.decompress(att[0].get_content()))
    ns = {"d": "urn:ietf:params:xml:ns:dmarc-2.0"}
    assert root.find("d:policy_published/d:domain", ns).text == "pass.test"
    total = sum(int(c.text) for c in root.findall("d:record/d:row/d:count", ns))
    assert total == 5, ET.tostring(root)   # both nodes' evaluations, once



def test_postgresql_batch_rows_and_dkim_rows(tmp_path, dns, postgres):
    """The PostgreSQL writer inserts a batch with one multi-row INSERT per
    table (ids taken from the sequence first): every evaluation arrives,
    and each DKIM row belongs to its own evaluation - none, one or two
    signatures per message, mixed in the same batches."""
    import subprocess
    gw = gateway(tmp_path, dns, database=postgres).start()
    want = []   # (sender domain, DKIM signatures)
    try:
        for i in range(12):
            nsig = i % 3
            dom = "dk.test" if nsig else "pass.test"
            msg, _ = mxtest.make_message(sender=f"u{i}@{dom}", subject=f"batch {i}")
            signed = msg
            for _ in range(nsig):
                signed = dnsserver.dkim_sign(signed, "sel1", "dk.test", dns.dkim_key) + signed
            gw.send(f"u{i}@{dom}", [RCPT], signed)
            want.append((dom, nsig))
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= len(want),
                        mxtest.scaled(10), what="rows written")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    def q(sql):
        r = subprocess.run(["psql", postgres, "-At", "-F", "|", "-c", sql],
                           capture_output=True, timeout=30, text=True)
        assert r.returncode == 0, r.stderr
        return [line.split("|") for line in r.stdout.splitlines()]
    got = q("SELECT e.header_from, count(d.evaluation_id), min(d.domain), min(d.result)"
            " FROM evaluation e LEFT JOIN evaluation_dkim d ON d.evaluation_id = e.id"
            " GROUP BY e.id ORDER BY e.id")
    assert [(g[0], int(g[1])) for g in got] == want, got
    assert all(g[2:] == ["dk.test", "pass"] for g in got if int(g[1]) > 0), got
    assert q("SELECT count(*) FROM evaluation_dkim d LEFT JOIN evaluation e"
             " ON e.id = d.evaluation_id WHERE e.id IS NULL") == [["0"]]


def test_kill9_during_run_neither_loses_nor_duplicates(tmp_path, dns):
    import subprocess
    sink = Downstream(host=RUA_MX).start()
    gw = gateway(tmp_path, dns, sink_port=sink.port).start()

    def send_now():
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr

    try:
        for _ in range(2):
            msg, _ = mxtest.make_message(sender="a@pass.test")
            gw.send("a@pass.test", [RCPT], msg)
        msg, _ = mxtest.make_message(sender="z@zslow.test")
        gw.send("z@zslow.test", [RCPT], msg)
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 3,
                        mxtest.scaled(10), what="rows written")
        send_now()
        # pass.test's report is made; the run now waits on zslow.test's DNS
        gw.wait_log(r"reports domain=pass\.test report_id=\w+ rua=agg@rua\.test")
        assert gw.kill9() is not None
        assert sink.messages == []
        gw.start()
        send_now()
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20), what="the report")
        gw.wait_log(r"reports domain=zslow\.test rua=x@slowrua\.test not verified",
                    mxtest.scaled(15))
        mxtest.wait_for(lambda: not gw.queue_ids(), mxtest.scaled(20), what="queue empty")
        # and once more: nothing new, nothing sent again
        nruns = gw.log_text().count("reports run begin=")
        send_now()
        mxtest.wait_for(lambda: gw.log_text().count("reports run begin=") > nruns,
                        mxtest.scaled(10), what="the third run")
        mxtest.wait_for(lambda: not gw.queue_ids(), mxtest.scaled(20), what="queue empty")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["agg@rua.test"]]
