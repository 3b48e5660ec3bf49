"""Issue 16 red team: outside input (a quoted local part in MAIL FROM, a
tab in HELO) must not forge members of the JSON log nor put a line into
another message's `mxgate log` story."""

import json
import subprocess

import pytest

from downstream import Downstream, relay_extra
from mxtest import make_message, mxgate_bin, scaled, wait_for


@pytest.fixture
def ds():
    d = Downstream().start()
    yield d
    d.stop()


def mxlog(*args):
    p = subprocess.run([mxgate_bin(), "log", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_quoted_local_part_forges_nothing(gateway, ds, fmt):
    extra = relay_extra([f"127.0.0.1:{ds.port}"])
    extra["log"] = {"level": "info", "format": fmt}
    gw = gateway(extra)
    data, marker = make_message(sender="alice@example.test", to="a@example.test")
    victim = gw.send("alice@example.test", ["a@example.test"], data)
    wait_for(lambda: ds.find(marker), scaled(15), what="victim delivered")

    evil = f'"x> status=sent id={victim} to=<ceo@example.test> "@evil.example'
    c = gw.client()
    c.ehlo("x\tstatus=sent\tid=" + victim)
    assert c.cmd(f"MAIL FROM:<{evil}>").code == 250
    # relay reject: a line with the sender and no queue id of its own
    assert c.cmd("RCPT TO:<someone@not-ours.example>").code >= 500
    c.cmd("QUIT")
    c.close()
    wait_for(lambda: "not-ours" in gw.log_path.read_text()
             and "disconnect" in gw.log_path.read_text().split("not-ours", 1)[1],
             scaled(10), what="reject and disconnect logged")
    gw.stop()

    if fmt == "json":
        recs = [json.loads(ln) for ln in gw.log_path.read_text().splitlines()
                if ln.startswith("{")]
        rej = [r for r in recs if str(r.get("reason", "")).startswith("relay")]
        assert len(rej) == 1, rej
        assert rej[0]["from"] == evil
        assert "status" not in rej[0] and "queue_id" not in rej[0], rej[0]
        assert not any(k.startswith("to") for k in rej[0]), rej[0]
        disc = [r for r in recs if r.get("event") == "disconnect"
                and r.get("session") == rej[0]["session"]]
        assert len(disc) == 1 and "status" not in disc[0] and "queue_id" not in disc[0]

    rc, out, err = mxlog(victim, "--file", str(gw.log_path))
    assert rc == 0, err
    assert "evil.example" not in out and "not-ours" not in out, out
    # --to picks no message of the attacker's session
    rc, out, err = mxlog("--to", "ceo@example.test", "--file", str(gw.log_path))
    assert rc == 1 and out == "", out


def test_message_id_paren_hides_no_member(gateway, ds):
    """A Message-ID "(x" once swallowed the rest of the queued line (size,
    tls, verdicts, reply) into one JSON member."""
    extra = relay_extra([f"127.0.0.1:{ds.port}"])
    extra["log"] = {"level": "info", "format": "json"}
    gw = gateway(extra)
    data = (b"Message-ID: (x@evil.example\r\nFrom: <alice@example.test>\r\n"
            b"To: <a@example.test>\r\nSubject: t\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n"
            b"\r\nhello\r\n")
    qid = gw.send("alice@example.test", ["a@example.test"], data)
    wait_for(lambda: qid in gw.log_path.read_text(), scaled(10), what="queued line")
    gw.stop()
    recs = [json.loads(ln) for ln in gw.log_path.read_text().splitlines()
            if ln.startswith("{")]
    q = [r for r in recs if r.get("event") == "queued" and r.get("queue_id") == qid]
    assert len(q) == 1, recs
    assert isinstance(q[0]["size"], int) and q[0]["message_id"] == "?x@evil.example", q[0]
    assert q[0]["reply"].startswith("250 "), q[0]
    assert "size" not in q[0]["message_id"], q[0]


@pytest.mark.parametrize("name", ['"x', "(x", "<x"])
def test_helo_cannot_swallow_the_queued_line(gateway, name):
    """helo="x / helo=(x / helo=<x once took from=, to= and the verdicts of
    the queued line into the helo member: such names are refused."""
    gw = gateway({"log": {"level": "info", "format": "json"}})
    c = gw.client()
    r = c.cmd("EHLO " + name)
    assert r.code == 501, r
    r = c.cmd("HELO " + name)
    assert r.code == 501, r
    c.cmd("QUIT")
    c.close()
    data, _ = make_message(sender="alice@example.test", to="user@example.test")
    qid = gw.send("alice@example.test", ["user@example.test"], data)
    wait_for(lambda: qid in gw.log_path.read_text(), scaled(10), what="queued line")
    gw.stop()
    q = [json.loads(ln) for ln in gw.log_path.read_text().splitlines()
         if ln.startswith("{") and qid in ln and '"queued"' in ln]
    assert len(q) == 1 and q[0]["from"] == "alice@example.test", q
