"""The report store's robustness (issue 14/15 review), black-box: the real
mxgate with `[reports] record = yes` against a store that is broken or down
(a reports.db of random bytes, a PostgreSQL server stopped and started by
the test), and the report run's periods and crash safety across restarts.

Covered: a broken or unreachable store never stops the gateway nor refuses
mail: it starts, accepts, says so (mxgate_reports_store_up 0, the
evaluations counted as not recorded) and recovers by itself when the store
comes back (reopened with a backoff; a PostgreSQL connection lost under a
running gateway is opened again), never touching the operator's file.
"""

import sqlite3
import subprocess
import urllib.request

import mxtest
from test_reports import RCPT, dns, gateway, postgres  # noqa: F401 (fixtures)


def metric_value(gw, name):
    """The sample of name, or None when the endpoint has none."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                  timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def send_pass(gw, n=1):
    for _ in range(n):
        msg, _ = mxtest.make_message(sender="a@pass.test")
        gw.send("a@pass.test", [RCPT], msg)   # asserts 250: mail goes on


def test_broken_sqlite_store_degrades_and_recovers(tmp_path, dns):  # noqa: F811
    gw = gateway(tmp_path, dns)
    gw.queue_dir.mkdir(parents=True, exist_ok=True)
    db = gw.queue_dir / "reports.db"
    junk = bytes((i * 37 + 11) % 256 for i in range(8192))   # not SQLite
    db.write_bytes(junk)
    gw.start()
    try:
        gw.wait_log(r"reports writer store unavailable store=sqlite "
                    r"error=\"[^\"]*not a database")
        assert metric_value(gw, "mxgate_reports_store_up") == 0
        send_pass(gw, 2)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_write_errors_total")
                                 or 0) >= 2, mxtest.scaled(10), what="two not recorded")
        assert gw.is_running()
        assert db.read_bytes() == junk   # the operator's file is left alone
        # the operator moves the broken file aside: recording resumes
        # without a restart (the writer tries again with a backoff)
        db.rename(gw.queue_dir / "reports.db.broken")
        mxtest.wait_for(lambda: metric_value(gw, "mxgate_reports_store_up") == 1,
                        mxtest.scaled(40), what="the store back")
        gw.wait_log(r"reports writer store available again store=sqlite")
        send_pass(gw)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 1, mxtest.scaled(10), what="recorded again")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("SELECT count(*) FROM evaluation").fetchone()[0] == 1
        # the next report says how many evaluations it misses
        assert con.execute("SELECT sum(n) FROM dropped").fetchone()[0] == 2
    finally:
        con.close()


def test_postgresql_down_at_start_then_up_and_restarted(tmp_path, dns,  # noqa: F811
                                                        postgres):  # noqa: F811
    postgres.stop()
    gw = gateway(tmp_path, dns, database=str(postgres)).start()
    try:
        gw.wait_log(r"reports writer store unavailable store=postgresql")
        assert metric_value(gw, "mxgate_reports_store_up") == 0
        send_pass(gw)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_write_errors_total")
                                 or 0) >= 1, mxtest.scaled(10), what="not recorded")
        postgres.start()
        mxtest.wait_for(lambda: metric_value(gw, "mxgate_reports_store_up") == 1,
                        mxtest.scaled(40), what="the store back")
        send_pass(gw)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 1, mxtest.scaled(10), what="recorded")
        # the server restarts under the running gateway: the writer's
        # connection is lost and opened again
        postgres.stop()
        postgres.start()
        send_pass(gw)
        gw.wait_log(r"reports writer store connection lost store=postgresql",
                    mxtest.scaled(10))
        send_pass(gw)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 2, mxtest.scaled(15), what="recorded after")
        assert metric_value(gw, "mxgate_reports_store_up") == 1
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    def q(sql):
        r = subprocess.run(["psql", str(postgres), "-At", "-c", sql], capture_output=True,
                           timeout=30, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    assert q("SELECT count(*) FROM evaluation") == "2"
    assert q("SELECT sum(n) FROM dropped") == "2"   # the one before, the one lost


# ------------------------------------------------------------ periods

DAY = 86400


def expected_id(gw, domain, begin, end):
    """RFC 9990 report_id of a run's report: 24 hex digits of
    SHA-256("hostname domain begin end"), end exclusive."""
    import hashlib
    return hashlib.sha256(f"{gw.hostname} {domain} {begin} {end}".encode()).hexdigest()[:24]


def sent_reports(sink):
    """(report_id, begin, end, record count) of each report at the sink."""
    import email
    import email.policy
    import gzip
    import xml.etree.ElementTree as ET
    ns = {"d": "urn:ietf:params:xml:ns:dmarc-2.0"}
    out = []
    for m in sink.messages:
        raw = m.data if isinstance(m.data, bytes) else m.data.encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        att = list(msg.iter_attachments())
        root = ET.fromstring(gzip.decompress(att[0].get_content()))
        md = root.find("d:report_metadata", ns)
        out.append((md.find("d:report_id", ns).text,
                    int(md.find("d:date_range/d:begin", ns).text),
                    int(md.find("d:date_range/d:end", ns).text),
                    sum(int(c.text) for c in root.findall("d:record/d:row/d:count", ns))))
    return sorted(out, key=lambda r: r[1])


def test_missed_periods_caught_up_one_report_each_and_idempotent(tmp_path, dns):  # noqa: F811
    """The gateway was down over period ends: at start-up it sends each
    complete period not reported yet on its own, aligned to UTC midnight,
    with the id of that (domain, period); a rerun of the same periods (the
    run records lost, e.g. a store restored from a backup) finds the
    reports already sent and sends nothing again."""
    import time
    from downstream import Downstream
    from test_reports import RUA_MX
    sink = Downstream(host=RUA_MX).start()
    gw = gateway(tmp_path, dns, sink_port=sink.port)
    con = None
    try:
        gw.start()
        send_pass(gw, 3)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 3, mxtest.scaled(10), what="three recorded")
        assert gw.stop() in (0, None), gw.log_tail(40)
        # move the evaluations into past days: one three days ago, two
        # the day after; the last run ended four days ago at midnight
        today = int(time.time()) // DAY * DAY
        d3, d2 = today - 3 * DAY, today - 2 * DAY
        con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
        ids = [r[0] for r in con.execute("SELECT id FROM evaluation ORDER BY id")]
        for i, t in zip(ids, (d3 + 100, d2 + 200, d2 + 300)):
            con.execute("UPDATE evaluation SET t = ? WHERE id = ?", (t, i))
        con.execute("DELETE FROM report_run")
        con.execute("INSERT INTO report_run VALUES (?, ?, ?)", (d3 - DAY, d3, d3))
        con.commit()
        gw.start()
        mxtest.wait_for(lambda: len(sink.messages) >= 2, mxtest.scaled(20),
                        what="two catch-up reports")
        mxtest.wait_for(lambda: not gw.queue_ids(), mxtest.scaled(20), what="queue empty")
        want = [(expected_id(gw, "pass.test", d3, d2), d3, d2 - 1, 1),
                (expected_id(gw, "pass.test", d2, d2 + DAY), d2, d2 + DAY - 1, 2)]
        assert sent_reports(sink) == want
        gw.wait_log(rf"reports run begin={d3} end={today} ")
        # recorded as sent each with its own period (what status and the
        # prune read), not the run's
        rows = con.execute("SELECT report_id, begin_t, end_t FROM report ORDER BY begin_t")
        assert [tuple(r) for r in rows] == [(want[0][0], d3, d2), (want[1][0], d2, d2 + DAY)]
        assert gw.stop() in (0, None), gw.log_tail(40)
        # the same periods again: the same ids, already sent, nothing new
        con.execute("DELETE FROM report_run")
        con.execute("INSERT INTO report_run VALUES (?, ?, ?)", (d3 - DAY, d3, d3))
        con.commit()
        gw.start()
        for rid, *_ in want:
            gw.wait_log(rf"reports domain=pass\.test report_id={rid} already sent",
                        mxtest.scaled(15))
        # and a plain restart has nothing left to catch up
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.start()
        empty = f"reports run begin={today} end={today} domains=0"
        mxtest.wait_for(lambda: gw.log_text().count(empty) >= 2, mxtest.scaled(15),
                        what="an empty start-up run (the first start had one too)")
        assert not gw.queue_ids()
    finally:
        if con is not None:
            con.close()
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert len(sink.messages) == 2, [m.rcpt_tos for m in sink.messages]


def preview_meta(gw, domain):
    """(report_id, begin, end, record count) of `mxgate reports preview`."""
    import xml.etree.ElementTree as ET
    r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "preview", domain, "-c",
                        str(gw.config_path)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    ns = {"d": "urn:ietf:params:xml:ns:dmarc-2.0"}
    root = ET.fromstring(r.stdout)
    md = root.find("d:report_metadata", ns)
    return (md.find("d:report_id", ns).text, int(md.find("d:date_range/d:begin", ns).text),
            int(md.find("d:date_range/d:end", ns).text),
            sum(int(c.text) for c in root.findall("d:record/d:row/d:count", ns)))


def test_preview_is_what_the_next_run_sends(tmp_path, dns):  # noqa: F811
    """The preview covers what a run ending now would - from the last
    run's end, not from the period's start - with that run's report_id."""
    import time
    from downstream import Downstream
    from test_reports import RUA_MX
    sink = Downstream(host=RUA_MX).start()
    gw = gateway(tmp_path, dns, sink_port=sink.port).start()
    try:
        send_pass(gw, 2)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 2, mxtest.scaled(10), what="two recorded")
        today = int(time.time()) // DAY * DAY
        rid, begin, end, n = preview_meta(gw, "pass.test")
        assert (begin, n) == (today, 2)   # no run yet: from the period's start
        assert rid == expected_id(gw, "pass.test", begin, end + 1)
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20), what="the report")
        [(sid, sbegin, send_end, sn)] = sent_reports(sink)
        assert (sbegin, sn) == (today, 2)
        assert sid == expected_id(gw, "pass.test", sbegin, send_end + 1)
        # after the run: the preview starts where that run ended (once the
        # clock is past that end: a row recorded in the run's last second
        # is stamped with the end, the next run's first second)
        send_pass(gw)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 3, mxtest.scaled(10), what="one more recorded")
        mxtest.wait_for(lambda: int(time.time()) > send_end + 1, mxtest.scaled(5),
                        what="the clock past the run's end")
        rid, begin, end, n = preview_meta(gw, "pass.test")
        assert (begin, n) == (send_end + 1, 1)
        assert rid == expected_id(gw, "pass.test", begin, end + 1)
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()


# ------------------------------------------------------------ crash safety

def test_kill9_after_commit_before_queue_and_dead_claim_expires(tmp_path, dns,  # noqa: F811
                                                                postgres):  # noqa: F811
    """kill -9 after the run committed its report but before it was queued:
    the next start queues it from the outbox - exactly one report arrives.
    The window is held open for real: a row lock the test takes on another
    outbox row makes the run's outbox claim (right after its commit) wait,
    and the gateway is killed while it waits.  The report's outbox row is
    then marked claimed 10 minutes ago (a node that claimed it and died):
    the claim lease expires, so it does not block the fleet forever."""
    import time
    from downstream import Downstream
    from test_reports import RUA_MX
    uri = str(postgres)

    def q(sql):
        r = subprocess.run(["psql", uri, "-At", "-c", sql], capture_output=True, timeout=30,
                           text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    sink = Downstream(host=RUA_MX).start()
    gw = gateway(tmp_path, dns, sink_port=sink.port, database=uri).start()
    locker = None
    try:
        gw.wait_log(r"reports run begin=\d+ end=\d+ domains=0")   # the start-up run
        send_pass(gw, 2)
        mxtest.wait_for(lambda: (metric_value(gw, "mxgate_reports_recorded_total")
                                 or 0) >= 2, mxtest.scaled(10), what="two recorded")
        q("INSERT INTO outbox (report_id, rcpt, sender, msg) VALUES"
          " ('held', 'x@example.invalid', 'y@example.invalid', '\\x00')")
        locker = subprocess.Popen(["psql", uri, "-At"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        locker.stdin.write("BEGIN;\nSELECT report_id FROM outbox WHERE report_id = 'held'"
                           " FOR UPDATE;\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() in ("BEGIN", "held")
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: q("SELECT count(*) FROM pg_stat_activity WHERE"
                                  " wait_event_type = 'Lock' AND query LIKE"
                                  " 'UPDATE outbox SET claimed_at%'") == "1",
                        mxtest.scaled(20), what="the run's outbox claim waiting")
        # committed: the report and its message, not claimed, not queued
        assert q("SELECT count(*) FROM report WHERE domain = 'pass.test'") == "1"
        assert q("SELECT count(*) FROM outbox WHERE report_id <> 'held' AND queued = 0"
                 " AND claimed_at IS NULL") == "1"
        assert gw.kill9() is not None
        locker.stdin.write("ROLLBACK;\n")
        locker.stdin.close()
        locker.wait(timeout=30)
        locker = None
        q("DELETE FROM outbox WHERE report_id = 'held'")
        assert sink.messages == [] and not gw.queue_ids()
        # a node claimed it ten minutes ago and died: the lease has expired
        q(f"UPDATE outbox SET claimed_at = {int(time.time()) - 601}")
        gw.start()
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20), what="the report")
        mxtest.wait_for(lambda: not gw.queue_ids(), mxtest.scaled(20), what="queue empty")
        mxtest.wait_for(lambda: q("SELECT queued FROM outbox") == "1", mxtest.scaled(10),
                        what="marked queued")
        # and a run now has nothing new to send
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: gw.log_text().count("reports run begin=") >= 4,
                        mxtest.scaled(10), what="the last run")
        mxtest.wait_for(lambda: not gw.queue_ids(), mxtest.scaled(20), what="queue empty")
    finally:
        if locker is not None:
            locker.kill()
            locker.wait()
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["agg@rua.test"]]
