"""The quarantine across an upgrade (issue 13): a queue written by the
previous layout, where a quarantined message sat in hold/ with only an
X-Mxgate-Quarantine field in its envelope's prepend, is taken over at
start-up - the message moves to quarantine/ (logged once), the quarantine
commands see it, a postmaster's hold stays a hold, and a release delivers
it as it would have been, stamped X-Mxgate-Released.  The files are
written here the way the old build wrote them (envelope version 2)."""

import os
import pwd
import re
import time

import mxtest
from mxtest import scaled, wait_for

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def old_envelope(qid, size, prepend, arrival):
    """An envelope as the previous build wrote it (no quarantine- keys)."""
    lines = [
        "version: 2", f"id: {qid}", f"arrival: {arrival}", f"size: {size}",
        f"sender: <{SENDER}>", "client-addr: 192.0.2.1", "helo: client.example.net",
        "smtputf8: 0", "eightbit: 0", "is-dsn: 0", "attempts: 0", "next-attempt: 0",
        "delay-warned: 0", "spf: pass", "dmarc: pass",
    ]
    lines += ["prepend: " + line.replace("\r\n", "\\r\\n")
              for line in prepend.splitlines(keepends=True)]
    lines += [f"rcpt: pending <{RCPT}>", "end: ok"]
    return "\n".join(lines) + "\n"


def put_old_message(gw, qid, prepend):
    data, marker = mxtest.make_message("old layout", sender=SENDER, to=RCPT)
    for d in ("msg", "hold"):
        (gw.queue_dir / d).mkdir(parents=True, exist_ok=True, mode=0o700)
    (gw.queue_dir / "msg" / qid).write_bytes(data)
    (gw.queue_dir / "hold" / qid).write_text(
        old_envelope(qid, len(data), prepend, int(time.time()) - 60))
    return marker


def test_old_hold_quarantine_migrated_then_released(gateway):
    gw = gateway(start=False)
    quarantined, held = "0000000000000A01", "0000000000000A02"
    received = "Received: from client.example.net ([192.0.2.1])\r\n\tby mx.example.test\r\n"
    m1 = put_old_message(gw, quarantined, received + "X-Mxgate-Quarantine: reason=virus; "
                         "by=mx.example.test; at=Mon, 30 Nov 2026 10:00:00 +0000\r\n")
    m2 = put_old_message(gw, held, received)
    gw.start()

    assert (gw.queue_dir / "quarantine" / quarantined).exists()
    assert not (gw.queue_dir / "hold" / quarantined).exists()
    assert (gw.queue_dir / "hold" / held).exists()
    migrate = (quarantined + r" queue op=migrate file=hold/" + quarantined +
               r" to=quarantine/" + quarantined + r" reason=virus")
    gw.wait_log(migrate)
    out = gw.cli("quarantine", "list", check=True).stdout
    assert re.search(quarantined + r" age=\d+s size=\d+ reason=virus from=<" + SENDER, out), out
    assert held not in out and "-- 1 quarantined message\n" in out, out
    qlist = gw.cli("queue", "list", check=True).stdout
    assert re.search(quarantined + " quarantine ", qlist) and re.search(held + " hold ", qlist)

    # a second start has nothing left to move: logged once
    gw.restart()
    assert len(re.findall(migrate, gw.log_text())) == 1
    assert (gw.queue_dir / "quarantine" / quarantined).exists()
    assert not gw.find_in_mailbox(m1) and not gw.find_in_mailbox(m2)

    # the postmaster's hold is the queue's to release, the quarantine the
    # quarantine's
    p = gw.cli("quarantine", "release", held)
    assert p.returncode == 1 and "not in quarantine" in p.stderr, p.stderr
    gw.cli("queue", "release", held, check=True)
    gw.wait_for_marker(m2)
    gw.cli("quarantine", "release", quarantined, check=True)
    msg = gw.wait_for_marker(m1)
    me = pwd.getpwuid(os.geteuid()).pw_name
    rel = mxtest.header_values(msg, "X-Mxgate-Released")
    assert len(rel) == 1 and rel[0].startswith(f"by={me}; at="), rel
    assert mxtest.header_values(msg, "X-Mxgate-Quarantine")[0].startswith("reason=virus;")
    gw.wait_log(quarantined + f" status=released by={me} reason=quarantine")
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
