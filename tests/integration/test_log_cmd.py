"""Issue 16, `mxgate log`: the whole story of a message from the log file -
its session (connect, verdict/queued line), each delivery attempt (a 451,
then the retry that succeeds), the DSN a 550 causes and that DSN's own
delivery - selected by queue id, --from, --to, --since; from a text log, a
JSON log, stdin, and the [log] file of the config."""

import json
import re
import subprocess

import pytest

from downstream import Downstream, dsns, relay_extra
from mxtest import make_message, mxgate_bin, scaled, wait_for

SENDER_A = "alice@example.test"
SENDER_B = "bob@example.test"


@pytest.fixture
def ds():
    d = Downstream().start()
    yield d
    d.stop()


def mxlog(*args, stdin=None):
    p = subprocess.run([mxgate_bin(), "log", *args], capture_output=True, text=True,
                       input=stdin, timeout=60)
    return p.returncode, p.stdout, p.stderr


def three_messages(gateway, ds, log):
    """A: 451 then delivered on retry.  B: 550, so a DSN goes back to B's
    sender (the sender domain's MX is the test downstream).  C: from A's
    sender too, delivered at once."""
    ds.rcpt_replies["a@example.test"] = ["451 4.3.0 try again later"]
    ds.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user here"]
    extra = relay_extra([f"127.0.0.1:{ds.port}"], bounce_port=ds.port)
    extra["log"] = log
    gw = gateway(extra)
    gw.dns.add("example.test", "A", "127.0.0.1")
    data, marker_a = make_message(sender=SENDER_A, to="a@example.test")
    qa = gw.send(SENDER_A, ["a@example.test"], data)
    data, _ = make_message(sender=SENDER_B, to="nobody@example.test")
    qb = gw.send(SENDER_B, ["nobody@example.test"], data)
    data, marker_c = make_message(sender=SENDER_A, to="c@example.test")
    qc = gw.send(SENDER_A, ["c@example.test"], data)
    wait_for(lambda: ds.find(marker_a) and ds.find(marker_c) and dsns(ds), scaled(15),
             what="deliveries and DSN")
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="empty queue")
    gw.stop()
    return gw, qa, qb, qc


def test_story_text_log(gateway, ds):
    gw, qa, qb, qc = three_messages(gateway, ds, {"level": "info"})
    log = str(gw.log_path)

    rc, out, err = mxlog(qa, "--file", log)
    assert rc == 0, err
    lines = out.splitlines()
    text = "\n".join(lines)
    # the session: connect ... queued ... disconnect, by session id
    m = re.search(r"s=([0-9a-f]+) queued id=" + qa + " .*from=<" + SENDER_A + ">", text)
    assert m, text
    sid = m.group(1)
    assert re.search(r"s=" + sid + r" connect client=127\.0\.0\.1", text), text
    assert re.search(r"s=" + sid + r" disconnect ", text), text
    # each delivery attempt
    assert re.search(qa + r" to=<a@example\.test> .*status=deferred", text), text
    assert re.search(qa + r" to=<a@example\.test> .*status=sent", text), text
    # nothing of B
    assert qb not in text and SENDER_B not in text, text
    # every line is a line of the log, in log order
    all_lines = gw.log_path.read_text().splitlines()
    idx = [all_lines.index(ln) for ln in lines]
    assert idx == sorted(idx)

    rc, out_b, err = mxlog(qb, "--file", log)
    assert rc == 0, err
    m = re.search(qb + r" status=dsn-queued .*dsn_id=([0-9A-F]{16})", out_b)
    assert m, out_b
    dsn = m.group(1)
    assert re.search(qb + r" to=<nobody@example\.test> .*status=bounced", out_b), out_b
    assert re.search(dsn + r" to=<" + SENDER_B + "> .*status=sent", out_b), out_b
    assert qa not in out_b

    # --from / --to pick the same stories; <> around the address is allowed
    assert mxlog("--from", SENDER_B, "--file", log)[1] == out_b
    assert mxlog("--to", "<a@example.test>", "--file", log)[1] == out
    assert mxlog(qa, "--from", SENDER_A, "--file", log)[1] == out
    rc, nothing, err = mxlog(qa, "--from", SENDER_B, "--file", log)
    assert rc == 1 and nothing == "" and "no message" in err
    assert mxlog("--from", "example.test", "--file", log)[0] == 1   # exact, not a substring
    # two messages from alice: both stories, one after the other
    rc, out_c, err = mxlog(qc, "--file", log)
    assert rc == 0 and qc in out_c and qa not in out_c, err
    assert mxlog("--from", SENDER_A, "--file", log)[1] == out + "\n" + out_c

    # --since: lines older than the DSN's delivery are dropped, the rest kept
    ts_dsn = re.search(r"^(\S+) .*" + dsn + r" to=<", out_b, re.M).group(1)
    rc, since_out, err = mxlog(qb, "--since", ts_dsn, "--file", log)
    assert rc == 0, err
    want = [ln for ln in out_b.splitlines() if ln.split(" ", 1)[0] >= ts_dsn[:23]]
    assert since_out.splitlines() == want
    assert len(want) < len(out_b.splitlines())
    assert mxlog(qb, "--since", "2h", "--file", log)[1] == out_b
    assert mxlog(qb, "--since", "2999-01-01", "--file", log)[0] == 1
    assert mxlog(qb, "--since", "yesterday", "--file", log)[0] == 2

    # stdin, as from journalctl -o cat
    assert mxlog(qa, "--file", "-", stdin=gw.log_path.read_text())[1] == out


def test_story_json_log_from_config(gateway, ds, tmp_path):
    """[log] format = json, file = ...: `mxgate log -c CONFIG` finds the file
    and reads the JSON records."""
    logfile = tmp_path / "json.log"
    gw, qa, qb, _ = three_messages(gateway, ds, {"level": "info", "format": "json",
                                            "file": str(logfile)})
    rc, out, err = mxlog(qb, "-c", str(gw.config_path))
    assert rc == 0, err
    recs = [json.loads(ln) for ln in out.splitlines()]
    queued = [r for r in recs if r.get("event") == "queued"]
    assert len(queued) == 1 and queued[0]["queue_id"] == qb and queued[0]["from"] == SENDER_B
    sid = queued[0]["session"]
    assert any(r.get("event") == "connect" and r.get("session") == sid for r in recs)
    dsn = [r for r in recs if r.get("status") == "dsn-queued"]
    assert len(dsn) == 1
    assert any(r.get("queue_id") == dsn[0]["dsn_id"] and r.get("status") == "sent"
               for r in recs)
    assert all(r.get("queue_id") in (None, qb, dsn[0]["dsn_id"]) for r in recs)
    assert not any(qa in json.dumps(r) for r in recs)
    rc, out_a, err = mxlog("--to", "a@example.test", "-c", str(gw.config_path))
    recs_a = [json.loads(ln) for ln in out_a.splitlines()]
    assert rc == 0, err
    # the delivery attempts: to, relay, status, the downstream's reply
    # (a 451 before any body byte is first tried on the next host: a
    # "failover" line, then "deferred" when the route has no other host)
    attempts = [r for r in recs_a if r.get("queue_id") == qa and "relay" in r
                and r.get("status") != "failover"]
    assert [r["status"] for r in attempts] == ["deferred", "sent"], attempts
    assert "451 4.3.0" in attempts[0]["detail"] and attempts[0]["to"] == "a@example.test"


def test_log_needs_a_file(gateway, tmp_path):
    gw = gateway()   # logs to stderr
    rc, out, err = mxlog("0123456789ABCDEF", "-c", str(gw.config_path))
    assert rc == 2 and "--file" in err and out == ""
    rc, out, err = mxlog("0123456789ABCDEF", "--file", str(tmp_path / "missing.log"))
    assert rc == 2 and "missing.log" in err
    assert mxlog("--file", str(gw.log_path))[0] == 2   # no selection
