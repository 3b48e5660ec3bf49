"""Faults, part 4 - a misbehaving downstream (issue 6).

test_delivery*.py (the delivery engineer's) already cover a downstream that
hangs after the final dot, drops the connection at MAIL/RCPT/DATA, answers
4xx/5xx, and TLS certificate failures.  This file covers what an aiosmtpd
server cannot be made to do: a raw socket server that stays silent at
connect, greets with garbage, resets the connection in the middle of DATA,
answers the final dot with garbage, speaks bare-LF or endless multi-line
replies, changes the reply code inside a multi-line reply, or answers
STARTTLS with garbage.  In each case the message stays queued (never
bounced, never lost) and is delivered, whole, once the downstream behaves.

Issue 11: a 5xx at greeting, to EHLO+HELO, to STARTTLS or to MAIL FROM is
a per-host failure: the next host is tried, then the message is deferred -
never bounced, no DSN (it expires after max_lifetime with the last reply).
Only a recipient's own reply bounces: a 5xx to RCPT (that recipient) or to
DATA / the final dot; a 2xx to DATA is no delivery.

Red team finding 4: a transaction that ends before any of the message was
sent and without a final answer about any recipient (4xx or 421 to MAIL
FROM, a malformed reply, a 4xx to every RCPT or to DATA) fails over to the
next host in the same attempt, and never marks the destination dead."""

import re
import socket
import ssl
import struct
import threading
import time

import pytest

from downstream import Downstream, dsn_parts, outbound_route, relay_extra
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
        self.mails = []             # MAIL FROM arguments, in order
        self.data_refused = 0       # DATA answered with anything but 354
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
        if mode == "greet-554":
            conn.sendall(b"554 5.3.2 downstream.test not accepting mail\r\n")
            buf = [b""]
            if self._readline(conn, buf).upper() == b"QUIT":
                conn.sendall(b"221 bye\r\n")
            return
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
                if mode == "ehlo-5xx":
                    conn.sendall(b"550 5.7.1 you are not welcome here\r\n")
                elif mode == "huge-ehlo":
                    conn.sendall(b"250-downstream.test\r\n" + b"250-X\r\n" * 5000 + b"250 OK\r\n")
                elif mode == "code-change":
                    conn.sendall(b"250-downstream.test\r\n550-mixed\r\n250 OK\r\n")
                elif mode == "bare-lf":
                    conn.sendall(b"250-downstream.test\n250 PIPELINING\n")
                else:
                    offer = self.tls or mode == "starttls-5xx"
                    ext = b"250-STARTTLS\r\n" if offer and not tls_on else b""
                    conn.sendall(b"250-downstream.test\r\n" + ext + b"250 8BITMIME\r\n")
            elif line.upper() == b"STARTTLS" and mode == "starttls-5xx":
                conn.sendall(b"554 5.7.0 TLS not available\r\n")
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
                with self.lock:
                    self.mails.append(mail)
                if b"refused-sender" in line or mode == "mail-5xx":
                    conn.sendall(b"550 5.7.1 sender refused\r\n")
                    mail = None
                elif mode == "mail-451":
                    conn.sendall(b"451 4.3.2 try later\r\n")
                    mail = None
                elif mode == "mail-421-close":
                    conn.sendall(b"421 4.3.2 closing the channel\r\n")
                    return
                elif mode == "mail-mixed":
                    # codes change inside one reply: malformed
                    conn.sendall(b"250-2.1.0 ok\r\n550 5.7.1 changed my mind\r\n")
                    mail = None
                else:
                    conn.sendall(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                if mail is None:
                    conn.sendall(b"503 5.5.1 MAIL first\r\n")
                elif mode == "rcpt-4xx":
                    conn.sendall(b"450 4.2.0 greylisted, try later\r\n")
                elif b"unknown-" in line:
                    conn.sendall(b"550 5.1.1 no such user\r\n")
                else:
                    rcpts.append(line[8:].decode("utf-8", "replace"))
                    conn.sendall(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA" and (mail is None or not rcpts):
                conn.sendall(b"503 5.5.1 no valid recipients\r\n")
            elif verb == b"DATA" and mode in ("data-250", "data-554", "data-451"):
                with self.lock:
                    self.data_refused += 1
                conn.sendall({"data-250": b"250 2.0.0 fine\r\n",
                              "data-554": b"554 5.6.0 content refused\r\n",
                              "data-451": b"451 4.3.0 try later\r\n"}[mode])
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


# ---------------------------------------------------------------- issue 11: who may bounce

def _split_gateway(gateway, hosts, bounce, tls="none", **route):
    """A gateway with example.test -> hosts (route "down"), and the DSNs to
    the senders' domain (client.example.net, whose MX is 127.0.0.1) -> the
    aiosmtpd `bounce` downstream through the outbound route."""
    gw = gateway(_split_routes(hosts, bounce, tls=tls, **route))
    gw.dns.add("client.example.net", "A", "127.0.0.1")
    return gw


def _split_routes(hosts, bounce, tls="none", **route):
    """example.test -> hosts (route "down"); everything else -> the aiosmtpd
    `bounce` downstream, and the outbound route (DSNs, by MX) to its port."""
    r = {"type": "smtp", "domains": "example.test", "hosts": ", ".join(hosts), "tls": tls,
         "connect_timeout": "2s", "command_timeout": "2s", "data_timeout": "2s",
         "dead_time": "1s"}
    r.update(route)
    return {"route down": r,
            "route default": {"type": "smtp", "hosts": f"127.0.0.1:{bounce.port}",
                              "tls": "none", "directory": None},
            "route outbound": outbound_route(bounce.port),
            "queue": {"retry_schedule": "1s", "max_lifetime": "1h",
                      "delay_warning_time": "0"}}


# mail-5xx: every MAIL FROM gets 550 5.7.1 - about the host, not a recipient
SESSION_5XX = ["greet-554", "ehlo-5xx", "starttls-5xx", "mail-5xx"]
# red team finding 4: nothing of the message sent and no final answer about
# any recipient - a 4xx to MAIL FROM (or 421 and the channel closed), a
# malformed reply to it, a 4xx to every RCPT, a 4xx to DATA
TX_FAILOVER = ["mail-451", "mail-421-close", "mail-mixed", "rcpt-4xx", "data-451"]


@pytest.mark.parametrize("mode", SESSION_5XX + ["mail-451", "rcpt-4xx"])
def test_session_5xx_single_host_defers_every_message(gateway, test_ca, mode):
    """One host, one connection, three messages waiting for it: a 5xx during
    the session set-up (or a transaction that fails over with no host left)
    defers all of them (no bounce, no DSN), and they are delivered once the
    host behaves.  A host that answered is not a dead destination."""
    with RawDownstream(tls=test_ca) as ds, Downstream() as bounce:
        ds.mode = mode
        tls = "encrypt" if mode == "starttls-5xx" else "none"
        gw = _split_gateway(gateway, [f"127.0.0.1:{ds.port}"], bounce, tls=tls,
                           max_connections="1")
        sent = [make_message(sender=SENDER, subject=f"m{i}") for i in range(3)]
        qids = [gw.send(SENDER, [f"u{i}@example.test"], d) for i, (d, _) in enumerate(sent)]
        for q in qids:
            gw.wait_log(q + r" status=deferred attempts=1 ", scaled(15))
        wait_for(lambda: ds.connections >= 2, scaled(15), what="a retry at the host")
        out = gw.cli("queue", "list", check=True).stdout
        for q in qids:
            assert re.search(q + r" (deferred|active|delivering) ", out), out
        assert " failed" not in out, out
        assert "-- 3 messages in queue" in out, out       # no DSN was queued
        log = gw.log_text()
        assert "status=bounced" not in log and "status=dsn-queued" not in log
        if mode in TX_FAILOVER:
            assert "status=dead" not in log and "suspended" not in log, log[-3000:]
        assert not bounce.messages, "a DSN reached the bounce destination"
        assert not ds.messages
        ds.mode = "good"
        for _, marker in sent:
            wait_for(lambda: ds.find(marker), scaled(20), what=f"delivery after {mode}")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        assert not bounce.messages


@pytest.mark.parametrize("mode", SESSION_5XX)
def test_session_5xx_first_host_fails_over_to_second(gateway, test_ca, mode):
    with RawDownstream() as bad, RawDownstream(tls=test_ca) as good, Downstream() as bounce:
        bad.mode = mode
        tls = "encrypt" if mode == "starttls-5xx" else "none"
        gw = _split_gateway(gateway, [f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"],
                           bounce, tls=tls)
        msg, marker = make_message(sender=SENDER)
        qid = gw.send(SENDER, ["a@example.test"], msg)
        wait_for(lambda: good.find(marker), scaled(15), what="delivery at the second host")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        assert bad.connections >= 1
        assert re.search(qid + r" to=<a@example.test> route=down relay=127.0.0.1\[127.0.0.1\]:%d .*"
                         r"status=sent" % good.port, gw.log_text())
        assert "status=bounced" not in gw.log_text()
        assert not bounce.messages


@pytest.mark.parametrize("mode", TX_FAILOVER)
def test_no_final_answer_before_data_fails_over_to_second_host(gateway, mode):
    """RFC 5321 5.1: the addresses are tried in order until one takes the
    message.  When the first host ends the transaction before any of the
    message was sent and without a final answer about any recipient, the
    message goes to the second host in the same attempt: delivered there
    once, with every recipient; no deferral, no DSN, no dead destination.
    (It used to be deferred and retried at the first host until it expired.)"""
    with RawDownstream() as bad, RawDownstream() as good, Downstream() as bounce:
        bad.mode = mode
        gw = _split_gateway(gateway, [f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"],
                            bounce, max_connections="1", dead_after="1")
        sent = [make_message(sender=SENDER, subject=f"m{i}") for i in range(2)]
        qids = [gw.send(SENDER, ["a@example.test", "b@example.test"], m) for m, _ in sent]
        for _, marker in sent:
            wait_for(lambda: good.find(marker), scaled(15), what="delivery at the second host")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        for msg, marker in sent:
            [(_, rcpts, data)] = good.find(marker)
            assert rcpts == ["<a@example.test>", "<b@example.test>"] and data.endswith(msg)
        with bad.lock:
            assert bad.mails and not bad.messages
        log = gw.log_text()
        assert re.search(r"(%s) route=down relay=127.0.0.1\[127.0.0.1\]:%d status=failover"
                         % ("|".join(qids), bad.port), log), log[-3000:]
        for q in qids:
            assert re.search(q + r" to=<a@example.test> route=down relay=127.0.0.1"
                             r"\[127.0.0.1\]:%d .*status=sent" % good.port, log)
        for bad_word in ("status=deferred", "status=bounced", "status=dead"):
            assert bad_word not in log, (bad_word, log[-3000:])
        assert not bounce.messages


def test_2xx_to_data_is_not_a_delivery(gateway):
    """250 instead of 354 to DATA: the body was never sent, so the message
    is deferred (not marked delivered, no DSN) and sent whole later."""
    with RawDownstream() as ds, Downstream() as bounce:
        ds.mode = "data-250"
        gw = _split_gateway(gateway, [f"127.0.0.1:{ds.port}"], bounce)
        msg, marker = make_message(sender=SENDER)
        qid = gw.send(SENDER, ["a@example.test", "b@example.test"], msg)
        wait_for(lambda: ds.data_refused >= 2, scaled(15), what="a second DATA (a retry)")
        gw.wait_log(qid + r" status=deferred attempts=1 .*unexpected reply to DATA", scaled(5))
        assert qid in gw.queue_ids()
        log = gw.log_text()
        assert "status=sent" not in log and "status=bounced" not in log
        assert not ds.messages and not bounce.messages
        ds.mode = "good"
        wait_for(lambda: ds.find(marker), scaled(20), what="delivery after data-250")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        [(_, rcpts, data)] = ds.find(marker)
        assert rcpts == ["<a@example.test>", "<b@example.test>"] and data.endswith(msg)
        assert not bounce.messages


def test_5xx_to_data_bounces_that_message(gateway):
    with RawDownstream() as ds, Downstream() as bounce:
        ds.mode = "data-554"
        gw = _split_gateway(gateway, [f"127.0.0.1:{ds.port}"], bounce)
        msg, marker = make_message(sender=SENDER)
        qid = gw.send(SENDER, ["a@example.test"], msg)
        [dsn] = bounce.wait_messages(1)
        _, _, per_rcpt = dsn_parts(dsn)
        assert [r["status"] for r in per_rcpt] == ["5.6.0"]
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        assert ds.data_refused == 1 and not ds.messages
        assert re.search(qid + r" to=<a@example.test> .*status=bounced \(554 5.6.0",
                         gw.log_text())


def test_5xx_to_mail_defers_and_5xx_to_rcpt_bounces_that_recipient(gateway):
    """On one connection (max_connections = 1): a 550 to MAIL FROM is no
    answer about a recipient - that message is deferred (no DSN) and stays
    queued; the next message is delivered; a 550 to one RCPT bounces that
    recipient only."""
    with RawDownstream() as ds, Downstream() as bounce:
        gw = _split_gateway(gateway, [f"127.0.0.1:{ds.port}"], bounce, max_connections="1")
        refused = "refused-sender@client.example.net"
        m1, k1 = make_message(sender=refused, subject="refused")
        m2, k2 = make_message(sender=SENDER, subject="fine")
        q1 = gw.send(refused, ["a@example.test"], m1)
        q2 = gw.send(SENDER, ["b@example.test", "unknown-c@example.test"], m2)
        wait_for(lambda: ds.find(k2), scaled(15), what="the second message")
        wait_for(lambda: bounce.messages, scaled(15), what="the DSN for unknown-c")
        gw.wait_log(q1 + r" status=deferred attempts=2 ", scaled(15))
        assert not ds.find(k1)
        [(_, rcpts, _)] = ds.find(k2)
        assert rcpts == ["<b@example.test>"]
        [rec] = bounce.messages
        _, _, per_rcpt = dsn_parts(rec)
        assert rec.rcpt_tos == [SENDER]
        assert [(r["final-recipient"], r["status"]) for r in per_rcpt] == \
            [("rfc822; unknown-c@example.test", "5.1.1")]
        wait_for(lambda: gw.queue_ids() == {q1}, scaled(10), what="only the refused message queued")
        log = gw.log_text()
        assert re.search(q1 + r" to=<a@example.test> .*status=deferred \(4.4.0 MAIL FROM refused "
                         r"by .*550 5.7.1 sender refused\)", log), log
        assert not re.search(q1 + r" .*status=bounced", log)
        assert re.search(q2 + r" to=<b@example.test> .*status=sent", log)
        assert not re.search(q2 + r" to=<b@example.test> .*status=(bounced|deferred)", log)


def test_5xx_to_mail_bounces_only_at_expiry_with_that_reply(gateway):
    """A host that refuses MAIL FROM for good: the message is retried until
    [queue] max_lifetime, then the expiry DSN (4.4.7) carries the host's
    reply as its diagnostic - never an immediate bounce."""
    with RawDownstream() as ds, Downstream() as bounce:
        ds.mode = "mail-5xx"
        routes = _split_routes([f"127.0.0.1:{ds.port}"], bounce)
        routes["queue"]["max_lifetime"] = "4s"
        gw = gateway(routes)
        gw.dns.add("client.example.net", "A", "127.0.0.1")
        msg, _ = make_message(sender=SENDER)
        qid = gw.send(SENDER, ["a@example.test"], msg)
        [dsn] = bounce.wait_messages(1)
        _, _, [r] = dsn_parts(dsn)
        assert r["action"] == "failed" and r["status"] == "4.4.7", r
        assert "MAIL FROM refused by" in r["diagnostic-code"], r
        assert "550 5.7.1 sender refused" in r["diagnostic-code"], r
        assert "expired" in r["diagnostic-code"], r
        with ds.lock:
            assert len(ds.mails) >= 2, ds.mails      # retried, not bounced at once
        log = gw.log_text()
        assert f"{qid} to=<a@example.test> status=expired" in log
        assert not re.search(qid + r" to=<a@example.test> .*status=bounced", log)
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")


def test_silent_host_is_given_up_after_greeting_timeout(gateway):
    """A host that accepts the connection and never greets is given up after
    the route's greeting_timeout, not its command_timeout: the slot it
    holds is freed (bench: a black-holed route starved healthy ones because
    the greeting wait used the 5 min command_timeout, while the reference
    said connect_timeout covered it)."""
    with RawDownstream() as ds:
        ds.mode = "silent"
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="none",
                                 route={"connect_timeout": "2s", "greeting_timeout": "1s",
                                        "command_timeout": "1h"},
                                 queue={"retry_schedule": "1h", "max_lifetime": "2h"}))
        msg, _ = make_message(sender=SENDER)
        t0 = time.monotonic()
        qid = gw.send(SENDER, ["a@example.test"], msg)
        gw.wait_log(qid + r" .*status=deferred", scaled(20))
        # the 1 s greeting deadline, not the hour of command_timeout (nor the
        # 8 s the silent server holds the connection)
        assert time.monotonic() - t0 < scaled(7), time.monotonic() - t0
        assert qid in gw.queue_ids()
