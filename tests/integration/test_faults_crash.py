"""Faults, part 1 - crash durability under load (issue 6).

Two client threads send messages without pause while the test kill -9s
mxgate at random moments (20 times, bounded in time), restarting it each
time.  At the end every message that got a 250 must have reached the
downstream (a real SMTP server, tests/integration/downstream.py) at least
once, and every message the downstream got - acknowledged or not - must be
whole: byte for byte what the client sent, never half-written.  Every
fifth message carries a blocked attachment and is quarantined ([attachments]
action = quarantine): those must sit whole in the queue's quarantine/, never
delivered, every acknowledged one among them.

A kill -9 leaves the kernel's page cache intact, so it cannot lose a
directory entry that was not fsynced: the power-loss case of envelope
recycling (reuse only after the folder's fsync) is covered by the unit test
test_retired_envelope_not_reused_before_fsync, which interposes fsync -
see docs/queue-format.md, "Process crash and power loss"."""

import base64
import hashlib
import random
import re
import threading
import time

from downstream import Downstream, relay_extra
from mxtest import RawClient, make_message, queued_id, scaled, wait_for

SENDER = "sender@client.example.net"
KILLS = 20
QUARANTINE_EVERY = 5
ELF = base64.encodebytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56).decode().replace("\n", "\r\n")


def is_quarantined(i):
    return i % QUARANTINE_EVERY == 0


def body_for(i):
    """A body of varying size (1 KB .. 200 KB) whose last line proves the
    whole body arrived."""
    rnd = random.Random(i)
    lines = rnd.choice([10, 100, 300, 1500])
    text = "".join(f"{i:06d} line {n:05d} " + "x" * 60 + "\r\n" for n in range(lines))
    return text + f"END-OF-BODY {i:06d}\r\n"


class Load:
    """Client threads: each opens a connection, sends up to 3 messages,
    quits; on any error it reconnects (the daemon may be dead right now)."""

    def __init__(self, gw, nthreads=2):
        self.gw = gw
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = {}         # marker -> message bytes (every attempt)
        self.acked = {}        # marker -> queue id (got 250)
        self.quarantined = set()  # markers of the messages with a blocked attachment
        self.errors = 0
        self.counter = 0
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(nthreads)]

    def next_msg(self):
        with self.lock:
            self.counter += 1
            i = self.counter
        if is_quarantined(i):
            body = ("--b\r\nContent-Type: text/plain\r\n\r\n" + body_for(i) +
                    "--b\r\nContent-Type: application/octet-stream\r\n"
                    "Content-Disposition: attachment; filename=tool\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n" + ELF + "--b--\r\n")
            msg, marker = make_message(subject=f"load {i}", body=body, to=f"u{i % 7}@example.test",
                                       headers=("MIME-Version: 1.0",
                                                "Content-Type: multipart/mixed; boundary=b"))
            with self.lock:
                self.quarantined.add(marker)
        else:
            msg, marker = make_message(subject=f"load {i}", body=body_for(i),
                                       to=f"u{i % 7}@example.test")
        with self.lock:
            self.sent[marker] = msg
        return msg, marker, f"u{i % 7}@example.test"

    def run(self):
        while not self.stop.is_set():
            try:
                with RawClient(self.gw.port, timeout=3) as c:
                    c.ehlo()
                    for _ in range(3):
                        if self.stop.is_set():
                            break
                        msg, marker, rcpt = self.next_msg()
                        r = c.transaction(SENDER, [rcpt], msg, expect_queued=False)
                        if r.code == 250:
                            qid = queued_id(r)
                            with self.lock:
                                self.acked[marker] = qid
                    c.cmd("QUIT")
            except (OSError, AssertionError):
                with self.lock:
                    self.errors += 1
                time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_kill9_under_continuous_load(gateway):
    rnd = random.Random(6)
    with Downstream() as ds:
        ds.data_delay = 0.01
        extra = relay_extra([f"127.0.0.1:{ds.port}"], queue={"retry_schedule": "1s"})
        extra["attachments"] = {"enabled": "yes", "action": "quarantine",
                                "blocked_types": "elf"}
        gw = gateway(extra)
        t_end = time.monotonic() + scaled(45)
        kills = 0
        with Load(gw) as load:
            while kills < KILLS and time.monotonic() < t_end:
                time.sleep(rnd.uniform(0.05, 0.5))
                gw.kill9()
                kills += 1
                assert not gw.is_running()
                gw.start()
            time.sleep(0.3)
        assert kills >= KILLS, f"only {kills} kills in the time budget"
        with load.lock:
            acked = dict(load.acked)
            sent = dict(load.sent)
            quarantined = set(load.quarantined)
        assert len(acked) >= KILLS, f"only {len(acked)} messages acknowledged under load"
        q_acked = {m: q for m, q in acked.items() if m in quarantined}
        acked = {m: q for m, q in acked.items() if m not in quarantined}
        assert q_acked, "no quarantined message acknowledged under load"

        subject = re.compile(rb"Subject: load \d+ (m[0-9a-f]{16})\r\n")

        def delivered():
            """marker -> list of delivered copies (indexed by Subject)."""
            out = {}
            for rec in list(ds.messages):
                m = subject.search(rec.data)
                assert m, f"downstream got a message nobody sent: {rec.data[:300]!r}"
                out.setdefault(m.group(1).decode(), []).append(rec)
            return out

        wait_for(lambda: not set(acked) - set(delivered()), scaled(30),
                 what=f"every acknowledged message downstream ({len(acked)} acked)")
        # msg/ID goes after its envelope (and after a folder fsync); what is
        # left is the quarantine
        qdir = gw.queue_dir / "quarantine"
        wait_for(lambda: not gw.queue_ids(("active", "deferred", "hold"))
                 and {p.name for p in gw.msg_files()} == {p.name for p in qdir.iterdir()},
                 scaled(20), what="queue drained, only the quarantine left")
        # every acknowledged quarantined message is there, whole; whatever is
        # there (acknowledged or not) is one of them, whole
        for marker, qid in q_acked.items():
            assert (qdir / qid).is_file(), f"{marker}: acknowledged {qid} not in quarantine/"
        for env in qdir.iterdir():
            text = env.read_text()
            assert "\nquarantine-reason: attachment\n" in text, text
            data = (gw.queue_dir / "msg" / env.name).read_bytes()
            m = subject.search(data)
            assert m and m.group(1).decode() in quarantined, f"{env.name}: {data[:300]!r}"
            assert data.endswith(sent[m.group(1).decode()]), f"{env.name}: not whole"
        # whole, never half-written: acknowledged or not
        for marker, recs in delivered().items():
            assert marker in sent, f"{marker}: delivered but never sent"
            assert marker not in quarantined, f"{marker}: quarantined, but delivered"
            want = sent[marker]
            for rec in recs:
                assert rec.data.endswith(want), \
                    f"{marker}: delivered message differs from what was sent " \
                    f"({len(rec.data)} bytes, sha {hashlib.sha1(rec.data).hexdigest()[:8]})"
                assert rec.data.count(b"END-OF-BODY") == 1
        assert not gw.incoming_files()
        corrupt = gw.queue_dir / "corrupt"
        assert not corrupt.is_dir() or not any(corrupt.iterdir()), \
            f"crash left files the start-up scan could not read: {list(corrupt.iterdir())}"
