"""Red team (issue 13): a hostile or broken clamd and what mxgate makes of
its answers.

A fake clamd on a unix socket in the test's folder speaks clamd's
IDSESSION/INSTREAM protocol (clamd(8)) but answers the way the test
chooses: "OK" before it has read the stream, or two answers at once.  No
real clamd is needed: the point is mxgate's reading of the protocol, never
a silent pass.
"""

import socket
import struct
import threading

import mxtest
from mxtest import make_message, scaled

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


class FakeClamd:
    """IDSESSION server; answer(conn_no, stream_no, id) -> bytes to send
    when a stream ends, early(conn_no) -> bytes to send right after
    "zINSTREAM" (then nothing more is read on that connection)."""

    def __init__(self, path, answer=None, early=None):
        self.path, self.answer, self.early = str(path), answer, early
        self.conns = 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._conn, args=(c, self.conns), daemon=True).start()

    @staticmethod
    def _read(c, buf, n):
        while len(buf) < n:
            d = c.recv(65536)
            if not d:
                raise EOFError
            buf += d
        return buf[:n], buf[n:]

    def _conn(self, c, no):
        buf = b""
        streams = 0
        try:
            cmd, buf = self._read(c, buf, 11)
            assert cmd == b"zIDSESSION\0", cmd
            while True:
                cmd, buf = self._read(c, buf, 10)
                assert cmd == b"zINSTREAM\0", cmd
                streams += 1
                if self.early:
                    c.sendall(self.early(no))
                    threading.Event().wait(scaled(30))  # read nothing more
                    return
                while True:
                    hdr, buf = self._read(c, buf, 4)
                    (n,) = struct.unpack(">I", hdr)
                    if n == 0:
                        break
                    _, buf = self._read(c, buf, n)
                c.sendall(self.answer(no, streams, streams))
        except (OSError, EOFError, AssertionError):
            pass
        finally:
            c.close()

    def stop(self):
        self.srv.close()


def _send(gw, data):
    with gw.client(timeout=scaled(30)) as c:
        c.ehlo()
        return c.transaction(SENDER, [RCPT], data, expect_queued=False)


def test_clamd_ok_before_the_stream_ends_is_not_clean(gateway, workdir):
    """clamd answers "stream: OK" as soon as the command arrives, before it
    could have read the message (2 MB: most of it not even written yet).
    That is no scan of this message: the configured on_failure applies
    (tempfail, 451) - the old client took it for clean and delivered it."""
    fake = FakeClamd(workdir / "early.sock", early=lambda no: b"1: stream: OK\0")
    try:
        gw = gateway({"clamav": {"socket": fake.path, "timeout": "10s"}})
        data, marker = make_message("early", body=("y" * 998 + "\r\n") * 2048)
        mxtest.assert_reply(_send(gw, data), 451, "4.7.1")
        gw.wait_log(r"virus_scan result=unscanned reason=protocol action=tempfail")
        assert not gw.find_in_mailbox(marker)
    finally:
        fake.stop()


def test_clamd_second_answer_in_advance_is_not_the_next_scans(gateway, workdir):
    """A broken clamd sends two answers after the first stream: the real
    one and "2: stream: OK" for a scan it has not seen.  The connection
    must not be reused - the old client kept the extra answer and gave it
    to the next message on that connection, a virus (its real answer came
    later) then went out as clean."""
    def answer(no, stream, rid):
        if no == 1 and stream == 1:
            return b"1: stream: OK\0" + b"2: stream: OK\0"
        return b"%d: stream: Evil-Test-Sig FOUND\0" % rid
    fake = FakeClamd(workdir / "twice.sock", answer=answer)
    try:
        gw = gateway({"clamav": {"socket": fake.path, "timeout": "10s"}})
        first, m1 = make_message("first")
        mxtest.assert_reply(_send(gw, first), 250)
        second, _ = make_message("second")
        r = _send(gw, second)
        mxtest.assert_reply(r, 550, "5.7.1")
        assert "Evil-Test-Sig" in r.text, r.text
        assert fake.conns == 2, fake.conns
        raw = gw.wait_for_marker(m1)
        assert mxtest.header_values(raw, "X-Virus-Scan")[0].startswith("clean;")
    finally:
        fake.stop()


def _attachment_names(raw):
    import email
    import email.policy
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return [p.get_filename() for p in msg.walk() if p.get_filename()]


def test_banner_never_turns_text_into_an_attachment(gateway):
    """An external sender writes, inside its HTML part, text that looks like
    a MIME boundary and an .exe part: right after <body> on the same line
    (7bit), or encoded as "=2D-b" (quoted-printable).  The attachment policy
    (run first) rightly sees one HTML part.  The banner must not turn that
    text into structure: the old rewrite broke the <body> line after the
    tag, so "--b" began a line - a boundary - and the downstream got a real
    evil.exe attachment that was never judged."""
    gw = gateway({"warning": {"enabled": "yes", "subject_tag": "[EXT]",
                              "banner_text": "CAUTION: external.",
                              "banner_html": "<b>CAUTION</b>: external."},
                  "attachments": {"enabled": "yes"}})
    exe = ("--b\r\nContent-Type: application/octet-stream; name=\"evil.exe\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n")
    bodies = {
        "7bit": "Content-Type: text/html\r\n\r\n<html><body>" + exe,
        "qp": ("Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
               "<html><body>Invoice</body></html>\r\n=2D" + exe[1:].replace("=", "=3D")),
    }
    for kind, part in bodies.items():
        data, marker = make_message(f"smuggle {kind}", headers=(
            "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b"),
            body="--b\r\n" + part)
        mxtest.assert_reply(_send(gw, data), 250)
        raw = gw.wait_for_marker(marker)
        assert b"data-mxgate-warning" in raw, (kind, raw[:1500])
        assert _attachment_names(raw) == [], (kind, _attachment_names(raw))
    # the same .exe as a real part is refused, so the policy is on
    data, _ = make_message("real", headers=("MIME-Version: 1.0",
                                            "Content-Type: multipart/mixed; boundary=b"),
                           body="--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" + exe)
    mxtest.assert_reply(_send(gw, data), 550, "5.7.1")
