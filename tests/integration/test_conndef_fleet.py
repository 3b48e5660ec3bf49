"""Connection-level defence, state across a fleet (issue 17): two mxgate
processes share their [ratelimit] counters through a real redis-server
started here on loopback (temp dir, no persistence).  When Redis is killed
or hangs (SIGSTOP), the gateways fail open - an honest client still gets
its banner and its mail through - and count it.

redis-server is a test dependency (make deps-test installs it): without it
these tests fail, as the rspamd and clamd ones do, rather than skip and
leave `make test` green without the fleet path."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from mxtest import (RawClient, assert_reply, free_port, make_message, mxgate_bin, queued_id,
                    scaled, wait_for)
from test_production_observe import parse_metrics, scrape

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"



class Redis:
    """A throw-away redis-server on 127.0.0.1:<free port>."""

    def __init__(self, tmp, password=None):
        assert os.path.exists(REDIS_BIN), \
            "redis-server not installed (Debian package redis-server: make deps-test)"
        self.port = free_port()
        self.password = password
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]
        if password:
            args += ["--requirepass", password]
        self.sock = self.dir / "redis.sock"
        args += ["--unixsocket", str(self.sock), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._ping(), scaled(10), what="redis-server answering PING")

    def _ping(self):
        try:
            return self.cmd("PING") == "+PONG"
        except OSError:
            return False

    def cmd(self, *words, db=None):
        """One command (in database db); the first line of the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=scaled(2)) as s:
            out = b""
            want = 1
            if self.password:
                out += self._enc("AUTH", self.password)
                want += 1
            if db is not None:
                out += self._enc("SELECT", db)
                want += 1
            out += self._enc(*words)
            s.sendall(out)
            data = b""
            while data.count(b"\r\n") < want:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.split(b"\r\n")[want - 1].decode()

    def count(self, key):
        """The integer a rate counter holds (0 when it does not exist)."""
        rep = self.cmd("EVAL", "return tonumber(redis.call('GET', KEYS[1]) or 0)", 1, key)
        assert rep.startswith(":"), rep
        return int(rep[1:])

    @staticmethod
    def _enc(*words):
        out = f"*{len(words)}\r\n".encode()
        for w in words:
            b = str(w).encode()
            out += f"${len(b)}\r\n".encode() + b + b"\r\n"
        return out

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(scaled(10))


@pytest.fixture
def redis(workdir):
    made = []

    def make(**kw):
        r = Redis(workdir, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def node(gateway, r, db=0, metrics_port=None, state=None, sections=None, **limits):
    conf = {"window": "1h"}
    conf.update({k: str(v) for k, v in limits.items()})
    st = {"redis": r.url(db)}
    if r.password:
        st["password"] = r.password
    st.update(state or {})
    extra = {"state": st, "ratelimit": conf}
    extra.update(sections or {})
    if metrics_port:
        extra["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    return gateway(extra)


def metric(port, name, label):
    status, _, body = scrape(port)
    assert status == 200
    return parse_metrics(body).get((name, label), 0)


def test_connection_rate_shared_by_two_nodes(gateway, redis):
    """Three connections per hour from 127.0.0.2, wherever they land: two on
    node A and one on node B use the budget; the fourth is refused by B and
    the fifth by A.  (AUTH with requirepass and a database other than 0.)"""
    r = redis(password="s3cret-fleet")
    a = node(gateway, r, db=3, connections_per_ip=3)
    # a host name is resolved once at start (hiredis would block the loop on each connect)
    b = node(gateway, r, db=3, state={"redis": f"redis://localhost:{r.port}/3"},
             connections_per_ip=3)
    for gw in (a, a, b):
        with RawClient(gw.port, source="127.0.0.2") as c:
            assert_reply(c.banner, 220)
    for gw in (b, a):
        with RawClient(gw.port, source="127.0.0.2", banner=False) as c:
            rep = c.reply(timeout=scaled(5))
            assert_reply(rep, 421, "4.7.0")
            assert "Too many connections from [127.0.0.2]" in rep.text, rep
            c.wait_closed(scaled(5))
    assert r.cmd("EXISTS", "mxgate:rl:connections_per_ip [127.0.0.2]", db=3) == ":1"
    b.wait_log(r"ratelimit client=127\.0\.0\.2 limit=connections_per_ip .*count=4 max=3")
    a.wait_log(r"ratelimit client=127\.0\.0\.2 limit=connections_per_ip .*count=5 max=3")
    # another address is not affected, on either node
    for gw in (a, b):
        msg, marker = make_message()
        gw.send(SENDER, [RCPT], msg, source="127.0.0.3")
        gw.wait_for_marker(marker)


def test_unix_socket(gateway, redis):
    """unix:/PATH?db=N: two nodes over the socket share the message rate."""
    r = redis()
    st = {"redis": f"unix:{r.sock}?db=2"}
    a = gateway({"state": st, "ratelimit": {"window": "1h", "messages_per_ip": "1"}})
    b = gateway({"state": st, "ratelimit": {"window": "1h", "messages_per_ip": "1"}})
    msg, marker = make_message()
    a.send(SENDER, [RCPT], msg, source="127.0.0.9")
    a.wait_for_marker(marker)
    with RawClient(b.port, source="127.0.0.9") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 451, "4.7.1")
    assert r.cmd("EXISTS", "mxgate:rl:messages_per_ip [127.0.0.9]", db=2) == ":1"
    assert r.cmd("EXISTS", "mxgate:rl:messages_per_ip [127.0.0.9]") == ":0"


def test_message_and_recipient_rates_shared(gateway, redis):
    """MAIL and RCPT wait for the shared count like RCPT waits for SPF: two
    messages per hour from 127.0.0.4 across both nodes, then 451 4.7.1 on
    either; the session goes on (RSET, QUIT)."""
    r = redis()
    a = node(gateway, r, messages_per_ip=2, recipients_per_domain=3)
    b = node(gateway, r, messages_per_ip=2, recipients_per_domain=3)
    for gw in (a, b):
        msg, marker = make_message()
        gw.send(SENDER, [RCPT], msg, source="127.0.0.4")
        gw.wait_for_marker(marker)
    with RawClient(a.port, source="127.0.0.4") as c:
        c.ehlo()
        rep = c.cmd(f"MAIL FROM:<{SENDER}>")
        assert_reply(rep, 451, "4.7.1")
        assert "Too many messages from [127.0.0.4]" in rep.text, rep
        assert_reply(c.cmd("QUIT"), 221)
    # recipients of example.test: 2 used above, the third passes, the fourth not
    with RawClient(b.port, source="127.0.0.5") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        rep = c.cmd("RCPT TO:<other@example.test>")
        assert_reply(rep, 451, "4.7.1")
        assert "Too many recipients for example.test" in rep.text, rep
        assert_reply(c.cmd("QUIT"), 221)
    assert r.cmd("GET", "mxgate:rl:messages_per_ip [127.0.0.4]") == "$1"


def test_recipient_and_domain_rates_shared(gateway, redis):
    """recipients_per_net, recipients_per_sender and messages_per_domain are
    counted in Redis too: what one node counted, the other refuses.  The
    stages are asked in turn - client, then sender, then domain - and a
    RCPT refused at one is not counted at the next.  messages_per_domain
    counts accepted messages (at the 250 after DATA) and is only read at
    RCPT: a RCPT without a message leaves no key."""
    r = redis()
    dom = {"domains": {"accepted_domains": "example.test, other.test, third.test"},
           "auth": {"spf": "yes"}}
    lim = {"recipients_per_net": 2, "recipients_per_sender": 3, "messages_per_domain": 2}
    a = node(gateway, r, sections=dom, **lim)
    b = node(gateway, r, sections=dom, **lim)
    for gw in (a, b):   # the senders SPF passes for: one budget each across networks
        gw.dns.add("flood.example", "TXT", '"v=spf1 ip4:127.0.0.0/16 -all"')

    def rcpts(gw, source, sender, *steps, data=False):
        with RawClient(gw.port, source=source) as c:
            c.ehlo()
            assert_reply(c.cmd(f"MAIL FROM:<{sender}>"), 250)
            for rcpt, code, text in steps:
                rep = c.cmd(f"RCPT TO:<{rcpt}>")
                assert_reply(rep, code)
                assert text in rep.text, rep
            if data:
                assert_reply(c.cmd("DATA"), 354)
                msg, _m = make_message()
                c.send(msg + b".\r\n")
                queued_id(c.reply())
    rcpts(a, "127.0.7.2", "s1@flood.example", ("u@example.test", 250, ""), data=True)
    rcpts(b, "127.0.7.3", "s2@flood.example", ("u@example.test", 250, ""), data=True)
    rcpts(b, "127.0.7.4", "s3@flood.example",
          ("u@other.test", 451, "Too many recipients from 127.0.7.0/24"))
    rcpts(a, "127.0.8.2", "s1@flood.example",
          ("u@example.test", 451, "Too many messages for example.test"),
          ("v@other.test", 250, ""))
    rcpts(b, "127.0.9.2", "s1@flood.example",
          ("w@third.test", 451, "Too many recipients from <s1@flood.example>"))
    for key in ("recipients_per_net 127.0.7.0/24", "recipients_per_sender <s1@flood.example>",
                "messages_per_domain example.test"):
        assert r.cmd("EXISTS", "mxgate:rl:" + key) == ":1", key
    # refused by the network: s3 and other.test not counted; refused by the
    # sender: third.test not counted
    assert r.count("mxgate:rl:recipients_per_sender <s3@flood.example>") == 0
    assert r.cmd("EXISTS", "mxgate:rl:messages_per_domain other.test") == ":0"  # no message
    assert r.count("mxgate:rl:messages_per_domain third.test") == 0
    assert r.count("mxgate:rl:recipients_per_sender <s1@flood.example>") == 4   # w@ too
    assert r.count("mxgate:rl:messages_per_domain example.test") == 2   # the two accepted


def test_redis_killed_fails_open(gateway, redis):
    """Redis dies mid-run: the next clients get their banner and their mail
    through at once, and the failures are logged and counted."""
    r = redis()
    mport = free_port()
    gw = node(gateway, r, metrics_port=mport, connections_per_ip=100, messages_per_ip=100)
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.6")
    gw.wait_for_marker(marker)
    assert r.cmd("GET", "mxgate:rl:connections_per_ip [127.0.0.6]") == "$1"
    r.proc.kill()
    r.proc.wait(scaled(10))
    for _ in range(3):
        msg, marker = make_message()
        gw.send(SENDER, [RCPT], msg, source="127.0.0.6")
        gw.wait_for_marker(marker)
    gw.wait_log(r"ratelimit store=redis failed limit=connections_per_ip action=allow")
    gw.wait_log(r"state redis=redis://127\.0\.0\.1:\d+/0 down")
    assert metric(mport, "mxgate_ratelimit_store_errors_total", '{store="redis"}') >= 3
    assert metric(mport, "mxgate_state_errors_total", '{reason="down"}') >= 1


def test_redis_hung_deadline_fails_open(gateway, redis):
    """Redis stops answering (SIGSTOP: connections are accepted by the
    kernel, no reply ever comes): each command ends at timeout_ms, the
    session goes on (fail open), and the timeout is counted."""
    r = redis()
    mport = free_port()
    gw = node(gateway, r, metrics_port=mport, state={"timeout_ms": "200"},
              connections_per_ip=100, messages_per_ip=100, recipients_per_ip=100)
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.7")
    gw.wait_for_marker(marker)
    r.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(2):
            msg, marker = make_message()
            gw.send(SENDER, [RCPT], msg, source="127.0.0.7")
            gw.wait_for_marker(marker)
        # after the retry pause the gateway reconnects; the hung server holds
        # the new commands again until their deadline
        time.sleep(1.5)
        msg, marker = make_message()
        gw.send(SENDER, [RCPT], msg, source="127.0.0.7")
        gw.wait_for_marker(marker)
        assert metric(mport, "mxgate_state_errors_total", '{reason="timeout"}') >= 2
        assert metric(mport, "mxgate_ratelimit_store_errors_total", '{store="redis"}') >= 3
        gw.wait_log(r"state redis=\S+ down reason=timeout")
    finally:
        r.proc.send_signal(signal.SIGCONT)
    # back: counting resumes in Redis
    wait_for(lambda: _sends_and_counts(gw, r), scaled(10), what="counting in Redis again")


def _sends_and_counts(gw, r):
    before = r.cmd("GET", "mxgate:rl:messages_per_ip [127.0.0.8]")
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.8")
    gw.wait_for_marker(marker)
    return r.cmd("GET", "mxgate:rl:messages_per_ip [127.0.0.8]") != before


def attempt(gw, msg, source, sender=SENDER, rcpts=(RCPT,)):
    """One transaction; the reply to the end of DATA."""
    with RawClient(gw.port, source=source) as c:
        c.ehlo()
        return c.transaction(sender, list(rcpts), msg, expect_queued=False)


GREY = {"greylist": {"enabled": "yes", "delay": "2s"}}


def test_greylist_triplet_shared(gateway, redis):
    """A triplet first seen on node A is early on node B, passes on B after
    the delay, and the network it allowlisted passes on A."""
    r = redis()
    a = node(gateway, r, sections=GREY)
    b = node(gateway, r, sections=GREY)
    msg, marker = make_message()
    assert_reply(attempt(a, msg, "127.0.4.2"), 451, "4.7.1")
    assert_reply(attempt(b, msg, "127.0.4.2"), 451, "4.7.1")   # too early, on the other node
    b.wait_log(r"greylist client=127\.0\.4\.2 .*result=early")
    time.sleep(2.5)
    queued_id(attempt(b, msg, "127.0.4.2"))
    b.wait_for_marker(marker)
    b.wait_log(r"greylist client=127\.0\.4\.2 .*result=retried")
    msg2, marker2 = make_message()
    queued_id(attempt(a, msg2, "127.0.4.3", sender="other@elsewhere.example"))
    a.wait_for_marker(marker2)
    a.wait_log(r"greylist client=127\.0\.4\.3 .*result=allowlisted")
    assert r.cmd("EXISTS", "mxgate:grey:net 127.0.4.0/24") == ":1"


def test_greylist_fails_open_without_redis(gateway, redis):
    """Redis gone: the end of DATA does not wait, the message is accepted
    (result=failed, counted) instead of greylisted."""
    r = redis()
    mport = free_port()
    gw = node(gateway, r, metrics_port=mport, sections=GREY)
    msg, _ = make_message()
    assert_reply(attempt(gw, msg, "127.0.5.2"), 451, "4.7.1")
    r.proc.kill()
    r.proc.wait(scaled(10))
    msg, marker = make_message()
    queued_id(attempt(gw, msg, "127.0.5.3"))
    gw.wait_for_marker(marker)
    gw.wait_log(r"greylist client=127\.0\.5\.3 .*result=failed reason=state_unavailable")
    assert metric(mport, "mxgate_greylist_total", '{result="failed"}') >= 1


PREGREET = {"pregreet": {"enabled": "yes", "greet_delay": "2s", "greet_mode": "pause"}}


def test_pregreet_pass_cache_shared(gateway, redis):
    """A client that passed the pregreet tests on node A is in the pass
    cache of node B too (result=cached there, not tested again); another
    client is still tested on B."""
    r = redis()
    a = node(gateway, r, sections=PREGREET)
    b = node(gateway, r, sections=PREGREET)
    with RawClient(a.port, source="127.0.6.2", timeout=scaled(10)) as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        assert_reply(c.cmd("QUIT"), 221)
    a.wait_log(r"pregreet client=127\.0\.6\.2 result=pass")
    wait_for(lambda: r.cmd("EXISTS", "mxgate:pass:127.0.6.2") == ":1", scaled(5),
             what="the pass in Redis")
    with RawClient(b.port, source="127.0.6.2", timeout=scaled(10)) as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        assert_reply(c.cmd("QUIT"), 221)
    b.wait_log(r"pregreet client=127\.0\.6\.2 result=cached")
    assert not re.search(r"pregreet client=127\.0\.6\.2 result=pass", b.log_text())
    with RawClient(b.port, source="127.0.6.3", timeout=scaled(10)) as c:
        assert_reply(c.banner, 220)
        c.ehlo()
    b.wait_log(r"pregreet client=127\.0\.6\.3 result=pass")
    assert not re.search(r"pregreet client=127\.0\.6\.3 result=cached", b.log_text())


def test_pregreet_fails_open_without_redis(gateway, redis):
    """Redis gone: the pass-cache lookup fails at once, the client is simply
    tested (banner after greet_delay, not stalled), its pass is kept on this
    node only - logged and counted - and its next connection is a local hit."""
    r = redis()
    mport = free_port()
    gw = node(gateway, r, metrics_port=mport, sections=PREGREET)
    r.proc.kill()
    r.proc.wait(scaled(10))
    with RawClient(gw.port, source="127.0.6.5", timeout=scaled(10)) as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        assert_reply(c.cmd("QUIT"), 221)
    gw.wait_log(r"pregreet client=127\.0\.6\.5 result=pass")
    gw.wait_log(r"pregreet store=redis failed op=lookup action=test")
    gw.wait_log(r"pregreet store=redis failed op=add action=local")
    assert metric(mport, "mxgate_pregreet_store_errors_total", '{store="redis"}') >= 2
    with RawClient(gw.port, source="127.0.6.5", banner=False) as c:
        first = c._line(time.monotonic() + scaled(1.5))
        assert first.startswith(b"220 mx.example.test ESMTP"), first
    gw.wait_log(r"pregreet client=127\.0\.6\.5 result=cached")


def test_check_config_refuses_bad_redis_url(gateway):
    gw = gateway({"state": {"redis": "http://127.0.0.1:6379"}}, start=False)
    res = subprocess.run([mxgate_bin(), "check-config", "-c",
                          str(gw.config_path)], capture_output=True, text=True)
    assert res.returncode != 0
    assert "must be redis://HOST[:PORT][/DB] or unix:/PATH[?db=N]" in res.stderr + res.stdout
