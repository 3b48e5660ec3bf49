"""Faults, part 4 - a misbehaving downstream (issue 6).

test_delivery*.py (the delivery engineer's) already cover a downstream that
hangs after the final dot, drops the connection at MAIL/RCPT/DATA, answers
4xx/5xx, and TLS certificate failures.  This file covers what an aiosmtpd
server cannot be made to do: a raw socket server that stays silent at
connect, greets with garbage, resets the connection in the middle of DATA,
answers the final dot with garbage, speaks bare-LF or endless multi-line
replies, changes the reply code inside a multi-line reply, or answers
STARTTLS with garbage.  In each case the message stays queued (never
bounced, never lost) and is delivered, whole, once the downstream behaves."""

import socket
import ssl
import struct
import threading

import pytest

from downstream import relay_extra
from mxtest import free_port, make_message, scaled, wait_for

SENDER = "sender@client.example.net"


class RawDownstream:
    """A hand-written SMTP server whose misbehaviour is chosen by `mode`
    (read at each accept).  mode "good" is a correct server with optional
    STARTTLS (tls = TestCA)."""

    def __init__(self, tls=None):
        self.port = free_port()
        self.mode = "good"
        self.tls = tls
        self.messages = []          # (mail_from, [rcpts], data) of "good" sessions
        self.connections = 0
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.thread.join(5)
        self.lsock.close()

    def find(self, marker):
        m = marker.encode()
        with self.lock:
            return [x for x in self.messages if m in x[2]]

    def _accept_loop(self):
        while not self.stop_ev.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.mode), daemon=True).start()

    # -- helpers
    @staticmethod
    def _readline(conn, buf):
        while b"\n" not in buf[0]:
            d = conn.recv(65536)
            if not d:
                raise ConnectionError("eof")
            buf[0] += d
        line, buf[0] = buf[0].split(b"\n", 1)
        return line.rstrip(b"\r")

    def _serve(self, conn, mode):
        conn.settimeout(10)
        try:
            self._session(conn, mode)
        except (OSError, ConnectionError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _session(self, conn, mode):
        if mode == "silent":
            self.stop_ev.wait(8)
            return
        if mode == "garbage-banner":
            conn.sendall(b"\x16\x03\x01garbage\xff\xfe\r\nHTTP/1.1 400 Bad\r\n")
            self.stop_ev.wait(2)
            return
        conn.sendall(b"220 downstream.test ESMTP\n" if mode == "bare-lf"
                     else b"220 downstream.test ESMTP\r\n")
        buf = [b""]
        tls_on = False
        mail, rcpts = None, []
        while True:
            line = self._readline(conn, buf)
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                if mode == "huge-ehlo":
                    conn.sendall(b"250-downstream.test\r\n" + b"250-X\r\n" * 5000 + b"250 OK\r\n")
                elif mode == "code-change":
                    conn.sendall(b"250-downstream.test\r\n550-mixed\r\n250 OK\r\n")
                elif mode == "bare-lf":
                    conn.sendall(b"250-downstream.test\n250 PIPELINING\n")
                else:
                    ext = b"250-STARTTLS\r\n" if self.tls and not tls_on else b""
                    conn.sendall(b"250-downstream.test\r\n" + ext + b"250 8BITMIME\r\n")
            elif line.upper() == b"STARTTLS":
                conn.sendall(b"220 go ahead\r\n")
                if mode == "tls-garbage":
                    conn.sendall(b"\x15\x03\x03\x00\x02\x02\x28" + b"not tls at all\r\n" * 10)
                    self.stop_ev.wait(2)
                    return
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ctx.load_cert_chain(self.tls.chain, self.tls.key)
                conn = ctx.wrap_socket(conn, server_side=True)
                tls_on = True
                buf = [b""]
            elif verb == b"MAIL":
                mail, rcpts = line[10:].decode("utf-8", "replace"), []
                conn.sendall(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(line[8:].decode("utf-8", "replace"))
                conn.sendall(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                data = buf[0]
                buf[0] = b""
                if mode == "reset-in-data":
                    # RST after the first bytes of the message, before its end
                    while len(data) < 100:
                        data += conn.recv(100)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                while b"\r\n.\r\n" not in data:
                    d = conn.recv(65536)
                    if not d:
                        raise ConnectionError("eof in data")
                    data += d
                body, buf[0] = data.split(b"\r\n.\r\n", 1)
                body = body + b"\r\n"
                body = body[1:] if body.startswith(b".") else body
                body = body.replace(b"\r\n..", b"\r\n.")
                if mode == "garbage-after-dot":
                    conn.sendall(b"2x0 what\r\n\x00\xff")
                    self.stop_ev.wait(1)
                    return
                with self.lock:
                    self.messages.append((mail, rcpts, body))
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif verb == b"RSET" or verb == b"NOOP":
                conn.sendall(b"250 ok\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"500 what\r\n")


MODES = ["silent", "garbage-banner", "reset-in-data", "garbage-after-dot", "bare-lf",
         "huge-ehlo", "code-change"]


def _route(ds, tls="none", ca=None):
    return relay_extra([f"127.0.0.1:{ds.port}"], tls=tls, ca_file=ca,
                       route={"connect_timeout": "2s", "command_timeout": "2s",
                              "data_timeout": "2s"},
                       queue={"retry_schedule": "1s", "max_lifetime": "1h"})


@pytest.mark.parametrize("mode", MODES)
def test_faulty_downstream_keeps_message_queued_then_delivers(gateway, mode):
    with RawDownstream() as ds:
        ds.mode = mode
        gw = gateway(_route(ds))
        body = "".join(f"line {i:05d} " + "y" * 70 + "\r\n" for i in range(200)) + ".dot\r\n"
        msg, marker = make_message(sender=SENDER, body=body)
        qid = gw.send(SENDER, ["a@example.test"], msg)
        wait_for(lambda: ds.connections >= 2, scaled(20),
                 what="two attempts at the faulty downstream")
        gw.wait_log(qid + r" .*status=deferred", scaled(10))
        assert qid in gw.queue_ids(), f"{mode}: message left the queue while undeliverable"
        assert not gw.log_text().count("status=bounced"), f"{mode}: bounced"
        ds.mode = "good"
        wait_for(lambda: ds.find(marker), scaled(20), what=f"delivery after {mode}")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        got = ds.find(marker)
        for mail, rcpts, data in got:
            assert data.endswith(msg), f"{mode}: delivered message damaged"
            assert rcpts == ["<a@example.test>"]
        with ds.lock:
            assert all(m[0] != "<>" for m in ds.messages), f"{mode}: a bounce was sent"


def test_starttls_garbage_downstream(gateway, test_ca):
    """The downstream says 220 to STARTTLS and then sends garbage: with
    tls = encrypt the message is never sent in plaintext; it is delivered
    over TLS once the handshake works."""
    with RawDownstream(tls=test_ca) as ds:
        ds.mode = "tls-garbage"
        gw = gateway(_route(ds, tls="encrypt"))
        msg, marker = make_message(sender=SENDER)
        qid = gw.send(SENDER, ["a@example.test"], msg)
        wait_for(lambda: ds.connections >= 2, scaled(20), what="two TLS attempts")
        gw.wait_log(qid + r" .*status=deferred", scaled(10))
        assert not ds.find(marker), "sent in plaintext after a TLS failure"
        ds.mode = "good"
        wait_for(lambda: ds.find(marker), scaled(20), what="delivery over TLS")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        assert ds.find(marker)[0][2].endswith(msg)
