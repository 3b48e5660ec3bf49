"""downstream - a controllable SMTP server on loopback that plays mxgate's
downstream (the SMTP server mxgate relays to) in the delivery tests.

Built on aiosmtpd (Debian python3-aiosmtpd), running in a thread of the test
process so a test can change its behaviour between deliveries:

    ds = Downstream(tls=ca)              # STARTTLS offered with ca.chain/ca.key
    ds.start()                            # ds.port: a free loopback port
    ds.rcpt_replies["bad@x.test"] = ["550 5.1.1 no such user"]   # per recipient,
    ds.rcpt_replies["slow@x.test"] = ["451 4.3.0 later"]         # consumed in order,
                                                                 # then accepted
    ds.data_replies = ["452 4.3.1 full"]  # replies to the final dot, in order
    ds.hang_in_data = True                # never answer the final dot
    ds.data_delay = 0.05                  # answer the final dot after a pause
    ds.drop_at = "rcpt"                   # close the connection at MAIL/RCPT/DATA
    ds.local_domains = {"example.test"}   # refuse other recipient domains, like SES
                                          # inbound-smtp (554 5.7.1)
    ds.offer_8bitmime = False             # hide EHLO keywords
    ds.offer_smtputf8 = False
    ds.auth = ("user", "secret")          # offer AUTH PLAIN/LOGIN (after TLS)
    Downstream(line_length_limit=1 << 20) # take DATA lines longer than aiosmtpd's
                                          # 1001 octets (it answers 500 to them)
    ds.messages -> [Received(...)]        # what was accepted, in order
    ds.wait_messages(n, timeout) -> list
    ds.find(marker) -> list[Received]
    ds.stop()

Every wait is bounded; stop() releases a hung DATA so the thread ends.

Run as a script for manual tests:
    /usr/bin/python3 downstream.py --port 2526 [--cert C --key K] [--reject ADDR]...
"""

import argparse
import asyncio
import dataclasses
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

import mxtest


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    data: bytes
    tls: bool
    mail_options: list
    login: str = None


class _Handler:
    """aiosmtpd hooks that consult the Downstream's current settings."""

    def __init__(self, ds):
        self.ds = ds

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        out = []
        for line in responses:
            kw = line[4:].split(" ")[0].upper()
            if kw == "8BITMIME" and not self.ds.offer_8bitmime:
                continue
            if kw == "SMTPUTF8" and not self.ds.offer_smtputf8:
                continue
            if kw == "STARTTLS" and not self.ds.offer_starttls:
                continue
            out.append(line)
        # keep the last line a "250 " line
        if out and out[-1].startswith("250-"):
            out[-1] = "250 " + out[-1][4:]
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.ds._event("mail")
        if self.ds.drop_at == "mail":
            server.transport.close()
            return "421 4.4.2 dropping"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.ds._event("rcpt")
        if self.ds.drop_at == "rcpt":
            server.transport.close()
            return "421 4.4.2 dropping"
        if envelope.mail_from in ("", "<>"):
            # a recipient-verification probe (or a DSN): MAIL FROM:<>
            with self.ds.lock:
                self.ds.probes.append(address)
                self.ds.probe_tls.append(session.ssl is not None)
        if self.ds.rcpt_delay:
            await asyncio.sleep(self.ds.rcpt_delay)
        while self.ds.rcpt_gate is not None and not self.ds.rcpt_gate.is_set() \
                and not self.ds._stopping:
            await asyncio.sleep(0.02)    # held until the test opens the gate
        with self.ds.lock:
            queue = self.ds.rcpt_replies.get(address.lower())
            reply = queue.pop(0) if queue else None
            if (reply is None and self.ds.known_users is not None
                    and address.lower() not in self.ds.known_users):
                reply = "550 5.1.1 <%s>: user unknown" % address
            dom = address.rpartition("@")[2].lower()
            if reply is None and self.ds.local_domains is not None \
                    and dom not in self.ds.local_domains:
                reply = "554 5.7.1 Relay access denied: not a domain of this server"
            self.ds.rcpt_log.append((address, reply or "250"))
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.ds._event("data")
        if self.ds.drop_at == "data":
            server.transport.close()
            return "421 4.4.2 dropping"
        if self.ds.hang_in_data:
            while not self.ds._stopping and self.ds.hang_in_data:
                await asyncio.sleep(0.05)
            server.transport.close()
            return "421 4.4.2 gone"
        if self.ds.data_delay:
            await asyncio.sleep(self.ds.data_delay)
        with self.ds.lock:
            reply = self.ds.data_replies.pop(0) if self.ds.data_replies else None
        if reply:
            return reply
        login = getattr(session, "auth_data", None)
        if isinstance(login, LoginPassword):
            login = login.login.decode()
        rec = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                       session.ssl is not None, list(envelope.mail_options), login)
        with self.ds.lock:
            self.ds.messages.append(rec)
        return "250 2.0.0 OK queued"


class _Controller(Controller):
    """Controller whose SMTP class may take longer lines (line_length_limit
    is read when aiosmtpd builds its StreamReader, so it must be a class
    attribute)."""
    smtp_class = SMTP

    def factory(self):
        return self.smtp_class(self.handler, **self.SMTP_kwargs)


class Downstream:
    def __init__(self, host="127.0.0.1", port=None, *, tls=None, auth=None,
                 line_length_limit=None):
        self.host = host
        self.port = port or mxtest.free_port(host)
        self.tls = tls                  # mxtest.TestCA or None
        self.auth = auth                # (user, password) or None
        self.line_length_limit = line_length_limit   # None: aiosmtpd's 1001
        self.rcpt_replies = {}
        self.data_replies = []
        self.hang_in_data = False
        self.data_delay = 0.0           # seconds before answering the final dot
        self.drop_at = None
        self.known_users = None         # set of addresses; others get 550 5.1.1
        self.rcpt_delay = 0.0           # seconds before answering RCPT
        self.rcpt_gate = None           # threading.Event: RCPT replies wait until set
        self.probes = []                # RCPT addresses under MAIL FROM:<>
        self.probe_tls = []             # ... and whether the session used TLS
        self.local_domains = None       # set of domains: refuse the others
        self.offer_8bitmime = True
        self.offer_smtputf8 = True
        self.offer_starttls = True
        self.messages = []
        self.rcpt_log = []
        self.events = []
        self.lock = threading.Lock()
        self._stopping = False
        self._controller = None

    def _event(self, what):
        with self.lock:
            self.events.append(what)

    def _authenticator(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and self.auth is not None
              and auth_data.login.decode() == self.auth[0]
              and auth_data.password.decode() == self.auth[1])
        # handled=False: aiosmtpd answers 535 itself on failure
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self):
        kw = {}
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.tls.chain, self.tls.key)
            kw["tls_context"] = ctx
            kw["require_starttls"] = False
        if self.auth is not None:
            kw["authenticator"] = self._authenticator
            kw["auth_require_tls"] = True
        if self.line_length_limit:
            kw["data_size_limit"] = None          # no SIZE cap either
        self._controller = _Controller(_Handler(self), hostname=self.host, port=self.port,
                                       server_hostname="downstream.test",
                                       enable_SMTPUTF8=True, ready_timeout=10, **kw)
        if self.line_length_limit:
            self._controller.smtp_class = type("LongLineSMTP", (SMTP,),
                                               {"line_length_limit": self.line_length_limit})
        self._controller.start()
        return self

    def stop(self):
        self._stopping = True
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def wait_messages(self, n, timeout=None):
        timeout = mxtest.scaled(20) if timeout is None else timeout
        mxtest.wait_for(lambda: len(self.messages) >= n, timeout,
                        what=f"{n} message(s) at the downstream on port {self.port}")
        return list(self.messages)

    def find(self, marker):
        m = marker.encode() if isinstance(marker, str) else marker
        with self.lock:
            return [r for r in self.messages if m in r.data]

    def rcpts_delivered(self):
        """Every recipient address the downstream accepted a message for."""
        with self.lock:
            return [a for r in self.messages for a in r.rcpt_tos]


# ---------------------------------------------------------------- helpers for the tests

def relay_extra(hosts, *, tls="none", ca_file=None, route=None, queue=None, bounce_port=None):
    """Gateway `extra` for a default route of type smtp to hosts (list of
    "127.0.0.1:PORT") with short retry times (1s, 2s; lifetime 30s) and a
    dead destination retried after 1s.
    bounce_port: an outbound route of type mx whose MX hosts listen there
    (DSNs go to the sender domain's MX; the test puts it in gw.dns)."""
    r = {"type": "smtp", "hosts": ", ".join(hosts), "tls": tls, "directory": None,
         "connect_timeout": "3s", "command_timeout": "5s", "data_timeout": "5s",
         "dead_time": "1s"}
    if ca_file:
        r["tls_ca_file"] = ca_file
    r.update(route or {})
    q = {"retry_schedule": "1s, 2s", "max_lifetime": "30s", "delay_warning_time": "0"}
    q.update(queue or {})
    extra = {"route default": r, "queue": q}
    if bounce_port is not None:
        extra["route outbound"] = outbound_route(bounce_port)
    return extra


def outbound_route(port, tls="none"):
    """[route outbound] of type mx with the MX hosts on port (not 25)."""
    return {"role": "outbound", "type": "mx", "mx_port": str(port), "tls": tls,
            "connect_timeout": "3s", "command_timeout": "5s", "data_timeout": "5s"}


def dsn_parts(rec):
    """(email.message, per-message fields, [per-recipient fields]) of a DSN
    received by the downstream; asserts the RFC 3464 structure."""
    import email
    import email.policy
    msg = email.message_from_bytes(rec.data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"], \
        [p.get_content_type() for p in parts]
    # compat32 parses message/delivery-status into a list of header blocks
    blocks = parts[1].get_payload()
    fields = [{k.lower(): v for k, v in b.items()} for b in blocks]
    return msg, fields[0], fields[1:]


def dsns(ds):
    """Messages with the null sender (bounces) received by the downstream."""
    with ds.lock:
        return [m for m in ds.messages if m.mail_from in ("", "<>")]


def main():
    ap = argparse.ArgumentParser(description="test downstream SMTP server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2526)
    ap.add_argument("--reject", action="append", default=[], help="550 this recipient")
    ap.add_argument("--defer", action="append", default=[], help="451 this recipient once")
    args = ap.parse_args()
    ds = Downstream(args.host, args.port)
    for a in args.reject:
        ds.rcpt_replies[a.lower()] = ["550 5.1.1 no such user"] * 1000
    for a in args.defer:
        ds.rcpt_replies[a.lower()] = ["451 4.3.0 try again later"]
    ds.start()
    print(f"downstream listening on {args.host}:{ds.port}", flush=True)
    try:
        while True:
            time.sleep(1)
            for m in ds.messages[len(getattr(main, "_seen", [])):]:
                print(f"received from=<{m.mail_from}> to={m.rcpt_tos} bytes={len(m.data)}",
                      flush=True)
            main._seen = list(ds.messages)
    except KeyboardInterrupt:
        ds.stop()


if __name__ == "__main__":
    main()
