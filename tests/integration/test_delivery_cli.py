"""`mxgate queue list|show|flush|hold|release|delete` against a running
daemon over the control socket (docs/queue-cli.md): the downstream is down
at first, so messages wait in deferred/ with a long retry step; each command
is checked for its output, its exit code and its effect on the queue.
"""

import re

import mxtest
from downstream import Downstream, dsns, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "sender@example.test"


def _deferred_gateway(gateway, port):
    return gateway(relay_extra([f"127.0.0.1:{port}"],
                               queue={"retry_schedule": "1h", "max_lifetime": "1d"}))


def test_queue_commands(gateway):
    port = mxtest.closed_port()
    gw = _deferred_gateway(gateway, port)
    d1, m1 = make_message(sender=SENDER, subject="first")
    d2, m2 = make_message(sender=SENDER, subject="second")
    q1 = gw.send(SENDER, ["a@example.test", "b@example.test"], d1)
    q2 = gw.send(SENDER, ["c@example.test"], d2)
    gw.wait_log(q2 + r" status=deferred attempts=1")
    gw.wait_log(q1 + r" status=deferred attempts=1")

    # list: like mailq - id, age, size, sender, recipients, next attempt, last error
    p = gw.cli("queue", "list", check=True)
    out = p.stdout
    assert re.search(q1 + r" deferred age=\d+s size=\d+ attempts=1 next=\+\d+s "
                     r"from=<sender@example.test>", out), out
    assert "  to=<a@example.test> pending" in out
    assert "  to=<c@example.test> pending" in out
    assert "last_error=(4.4.1 connect to 127.0.0.1" in out
    assert "-- 2 messages in queue" in out
    assert out.index(q1) < out.index(q2)   # oldest first
    assert "OK" not in out.splitlines()

    # show: envelope + headers of the message (not the body)
    p = gw.cli("queue", "show", q1, check=True)
    assert f"id: {q1}" in p.stdout
    assert "sender: <sender@example.test>" in p.stdout
    assert "recipient: <b@example.test> pending" in p.stdout
    assert f"Subject: first {m1}" in p.stdout
    assert "Received: from client.example.net" in p.stdout
    assert "hello" not in p.stdout

    # hold: moves to hold/, flush of a held message is refused
    # each command says what it did (issue 16)
    assert gw.cli("queue", "hold", q1, check=True).stdout == f"held 1 message ({q1})\n"
    wait_for(lambda: q1 in gw.queue_ids(("hold",)), scaled(5), what="q1 in hold/")
    assert re.search(q1 + r" hold ", gw.cli("queue", "list", check=True).stdout)
    p = gw.cli("queue", "flush", q1)
    assert p.returncode == 1 and "on hold" in p.stderr

    # delete: gone, no bounce
    assert gw.cli("queue", "delete", q2, check=True).stdout == \
        f"deleted 1 message ({q2}), no bounce sent\n"
    wait_for(lambda: q2 not in gw.queue_ids() and not any(q2 in f.name for f in gw.msg_files()),
             scaled(5), what="q2 deleted (envelope, then message file)")
    # a postmaster's delete unlinks; its bytes are not kept for reuse in free/
    free = gw.queue_dir / "free"
    assert not any(q2 in f.name for f in free.iterdir()), list(free.iterdir())
    p = gw.cli("queue", "show", q2)
    assert p.returncode == 1 and "no such message" in p.stderr

    # the downstream comes up; release makes the held message due now
    with Downstream(port=port) as ds:
        assert gw.cli("queue", "release", q1, check=True).stdout == \
            f"released 1 message ({q1})\n"
        wait_for(lambda: ds.find(m1), scaled(10), what="released message delivered")
        assert sorted(ds.find(m1)[0].rcpt_tos) == ["a@example.test", "b@example.test"]
        wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
        assert not dsns(ds) and not ds.find(m2)
    assert "-- 0 messages in queue" in gw.cli("queue", "list", check=True).stdout


def test_flush_all_retries_now(gateway):
    port = mxtest.closed_port()
    gw = _deferred_gateway(gateway, port)
    markers = []
    for i in range(3):
        data, marker = make_message(sender=SENDER)
        qid = gw.send(SENDER, [f"u{i}@example.test"], data)
        gw.wait_log(qid + r" status=deferred attempts=1")
        markers.append(marker)
    with Downstream(port=port) as ds:
        p = gw.cli("queue", "flush", check=True)
        assert p.stdout.startswith("flushed 3 queued messages"), p.stdout
        wait_for(lambda: all(ds.find(m) for m in markers), scaled(10), what="all flushed")
        wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")


def test_cli_errors(gateway):
    gw = _deferred_gateway(gateway, mxtest.closed_port())
    p = gw.cli("queue", "show", "not-a-queue-id")
    assert p.returncode == 2 and "not a queue id" in p.stderr
    p = gw.cli("queue", "hold", "0123456789ABCDEF")
    assert p.returncode == 1 and "no such message 0123456789ABCDEF" in p.stderr
    p = gw.cli("queue", "release", "0123456789ABCDEF")
    assert p.returncode == 1
    p = gw.cli("queue", "frobnicate")
    assert p.returncode == 2 and "usage" in p.stderr
    p = gw.cli("queue", "show")
    assert p.returncode == 2
    gw.stop()
    p = gw.cli("queue", "list")
    assert p.returncode == 1 and "is mxgate running" in p.stderr
