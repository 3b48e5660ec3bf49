"""Red team (issues 13, 17): a hostile spam scanner and what its verdicts
do to the relayed message.

A fake rspamd on loopback answers every /checkv2 with a JSON verdict the
test chooses (no real rspamd needed: the point is what mxgate makes of an
answer, not rspamd's judgement).
"""

import json
import socket
import threading

import mxtest
from mxtest import make_message, scaled

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


class FakeRspamd:
    """HTTP/1.1 server answering each POST with self.answer (a dict)."""

    def __init__(self, answer):
        self.answer = answer
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v.strip())
                while len(buf) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[n:]
                self.requests += 1
                body = json.dumps(self.answer).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(body)
                          + body)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.srv.close()


ADD_HEADER = {"is_skipped": False, "score": 9.0, "required_score": 15.0,
              "action": "add header", "symbols": {"X": {"name": "X", "score": 9.0}}}


def _send(gw, data):
    with gw.client(timeout=scaled(30)) as c:
        c.ehlo()
        return c.transaction(SENDER, [RCPT], data, expect_queued=False)


def test_subject_tag_never_makes_a_line_over_998(gateway):
    """A Subject: line of 990 octets (legal: under RFC 5322's 998) tagged
    "[SPAM] " must not leave mxgate as one line of 997+ octets: a downstream
    that enforces the limit refuses it (and the message bounces).  mxgate
    folds its own header lines everywhere else (A-R, Received-SPF, DSN)."""
    fake = FakeRspamd(ADD_HEADER)
    try:
        gw = gateway({"rspamd": {"address": f"127.0.0.1:{fake.port}", "timeout": "10s"}})
        words = " ".join(["word%03d" % i for i in range(200)])  # no long word
        data, marker = make_message()
        subj = ("Subject: " + words)[:990 - len(marker) - 1] + " " + marker
        data = data.replace(b"Subject: test " + marker.encode(), subj.encode())
        assert len(subj) <= 998
        mxtest.assert_reply(_send(gw, data), 250)
        msg = gw.wait_for_marker(marker)
        head = msg.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            assert len(line) <= 998, (len(line), line[:60])
        vals = mxtest.header_values(msg, "Subject")
        assert len(vals) == 1
        # unfolded, the subject is the tag and the original words
        assert " ".join(vals[0].split()).startswith("[SPAM] word000 word001"), vals[0][:80]
        assert " ".join(vals[0].split()).endswith(marker)
    finally:
        fake.stop()


def test_forged_spam_headers_dropped_when_rspamd_is_down(gateway):
    """The client writes its own verdict ("X-Spam-Flag: NO", a clean
    X-Spam-Status, an X-Spam-Checker claiming a scan) and rspamd cannot be
    reached: the downstream must see none of the client's fields, only
    mxgate's "unchecked"."""
    port = mxtest.free_port()
    gw = gateway({"rspamd": {"address": f"127.0.0.1:{port}", "timeout": "3s"}})
    forged = ("X-Spam-Flag: NO", "X-Spam-Status: No, score=-100.00 forged-status",
              "X-Spam-Score: -100.00", "X-Spam-Checker: checked; forged-checker")
    data, marker = make_message("forged", headers=forged)
    mxtest.assert_reply(_send(gw, data), 250)
    msg = gw.wait_for_marker(marker)
    head = msg.split(b"\r\n\r\n", 1)[0]
    assert b"forged-status" not in head and b"forged-checker" not in head, head
    assert b"-100.00" not in head, head
    vals = mxtest.header_values(msg, "X-Spam-Checker")
    assert len(vals) == 1 and vals[0].startswith("unchecked"), vals


def test_hostile_rspamd_answer_cannot_inject_or_overflow_headers(gateway):
    """A compromised or buggy rspamd answers with CR LF in the action and in
    symbol names, 5,000 symbols of 200-octet names and an absurd score: no
    header field may be injected, no line may pass 998 octets, and the
    header block stays bounded."""
    syms = {("S%04d" % i) + "x" * 195: {"name": "n", "score": 0.001} for i in range(5000)}
    syms["EVIL\r\nBcc: victim@example.test"] = {"name": "EVIL", "score": 1.0}
    fake = FakeRspamd({"is_skipped": False, "score": 9.0, "required_score": 15.0,
                       "action": "add header", "symbols": syms,
                       "messages": {"smtp_message": "hi\r\nX-Injected: yes"}})
    try:
        gw = gateway({"rspamd": {"address": f"127.0.0.1:{fake.port}", "timeout": "10s"}})
        data, marker = make_message("hostile")
        mxtest.assert_reply(_send(gw, data), 250)
        msg = gw.wait_for_marker(marker)
        head = msg.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        assert all(len(ln) <= 998 for ln in lines), max(len(ln) for ln in lines)
        assert not any(ln.lower().startswith((b"bcc:", b"x-injected:")) for ln in lines)
        assert len(head) < 256 * 1024, len(head)
    finally:
        fake.stop()


def test_subject_tag_with_two_subject_fields(gateway):
    """A spammer sends two Subject: fields.  Whatever a reader shows (the
    first or the last), it must carry the tag - and mxgate must not swap
    their order (it holds the first back and writes it after the rest)."""
    fake = FakeRspamd(ADD_HEADER)
    try:
        gw = gateway({"rspamd": {"address": f"127.0.0.1:{fake.port}", "timeout": "10s"}})
        data, marker = make_message("first", headers=("Subject: second " + "x",))
        mxtest.assert_reply(_send(gw, data), 250)
        msg = gw.wait_for_marker(marker)
        vals = mxtest.header_values(msg, "Subject")
        assert len(vals) == 2, vals
        assert all(v.startswith("[SPAM] ") for v in vals), vals
    finally:
        fake.stop()


class FloodRspamd:
    """A broken or hostile rspamd: reads the request, then answers with a
    header block or body that does not end (up to `limit` octets), its n-th
    connection in the n-th of three shapes: a huge Content-Length, endless
    chunks, endless header lines."""

    MODES = ("length", "chunked", "headers")

    def __init__(self, limit=64 * 1024 * 1024):
        self.limit = limit
        self.sent = {}
        self.conns = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            mode = self.MODES[self.conns % len(self.MODES)]
            self.conns += 1
            threading.Thread(target=self._conn, args=(c, mode), daemon=True).start()

    def _conn(self, c, mode):
        buf = b""
        self.sent[mode] = 0
        try:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, body = buf.split(b"\r\n\r\n", 1)
            n = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v.strip())
            while len(body) < n:
                d = c.recv(65536)
                if not d:
                    return
                body += d
            if mode == "length":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 2000000000\r\n\r\n{\"action\":\"no action\",")
                piece = b" " * 65536
            elif mode == "chunked":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
                piece = b"10000\r\n" + b" " * 65536 + b"\r\n"
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                piece = (b"X-Filler: " + b"y" * 1000 + b"\r\n") * 64
            while self.sent[mode] < self.limit:
                c.sendall(piece)
                self.sent[mode] += len(piece)
        except OSError:
            pass  # mxgate gave up on us: what we want
        finally:
            c.close()

    def stop(self):
        self.srv.close()


def _vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_flooding_rspamd_answer_is_bounded_not_buffered(gateway):
    """rspamd (broken, or something else on its port) answers with a 2 GB
    Content-Length, endless chunks or endless header lines.  mxgate must
    give up as soon as the answer passes its limit - the message gets the
    configured on_failure (accept: "unchecked; reason=reply_too_large", or
    "protocol" for the header block) -
    instead of buffering whatever arrives until the deadline (the old
    client read all 64 MB of each, until the fake hung up)."""
    fake = FloodRspamd()
    try:
        gw = gateway({"rspamd": {"address": f"127.0.0.1:{fake.port}", "timeout": "8s"}})
        base = _vm_hwm_kib(gw.proc.pid)
        for mode in FloodRspamd.MODES:
            data, marker = make_message(f"flood {mode}")
            mxtest.assert_reply(_send(gw, data), 250)
            msg = gw.wait_for_marker(marker)
            vals = mxtest.header_values(msg, "X-Spam-Checker")
            why = "protocol" if mode == "headers" else "reply_too_large"
            assert vals and vals[0].startswith(f"unchecked; reason={why};"), (mode, vals)
            assert fake.sent[mode] < fake.limit, (mode, fake.sent)
        grown = _vm_hwm_kib(gw.proc.pid) - base
        assert grown < 32 * 1024, f"mxgate's peak memory grew by {grown} KiB"
    finally:
        fake.stop()


def test_spam_tag_on_a_message_without_subject(gateway):
    """Red team: a tagged spam with no Subject field at all went out with
    no tag anywhere a reader looks; it now gets "Subject: [SPAM]"."""
    fake = FakeRspamd(ADD_HEADER)
    try:
        gw = gateway({"rspamd": {"address": f"127.0.0.1:{fake.port}", "timeout": "10s"}})
        data, marker = make_message("gone")
        data = data.replace(f"Subject: gone {marker}\r\n".encode(), b"")
        mxtest.assert_reply(_send(gw, data), 250)
        msg = gw.wait_for_marker(marker)
        assert mxtest.header_values(msg, "Subject") == ["[SPAM]"], msg[:600]
    finally:
        fake.stop()


class TwoAnswersRspamd(FakeRspamd):
    """Keep-alive rspamd that answers its first request twice (the second
    answer a clean one) and every later one with "reject"."""

    def _conn(self, c):
        buf = b""

        def answer(action, score):
            body = json.dumps({"score": score, "required_score": 15.0,
                               "action": action}).encode()
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(body) + body)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v.strip())
                while len(buf) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[n:]
                self.requests += 1
                if self.requests == 1:
                    c.sendall(answer("no action", 1.0) + answer("no action", -5.0))
                else:
                    c.sendall(answer("reject", 99.0))
        except OSError:
            pass
        finally:
            c.close()


def test_extra_answer_is_not_the_next_messages_verdict(gateway):
    """A keep-alive rspamd (or a proxy in front of it) sends one answer too
    many.  The old client left it in the connection's buffer and read it as
    the next message's answer: that message (rspamd says reject) went out
    as clean, and every later verdict on the connection was the previous
    message's.  The connection must be dropped instead."""
    fake = TwoAnswersRspamd(None)
    try:
        gw = gateway({"rspamd": {"address": f"127.0.0.1:{fake.port}", "timeout": "10s"}})
        first, _ = make_message("first")
        mxtest.assert_reply(_send(gw, first), 250)
        second, _ = make_message("second")
        mxtest.assert_reply(_send(gw, second), 550, "5.7.1")
        gw.wait_log(r"rspamd address=\S+ error=\"bytes after the answer\"")
        assert fake.requests == 2, fake.requests
    finally:
        fake.stop()
