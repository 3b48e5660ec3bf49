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
