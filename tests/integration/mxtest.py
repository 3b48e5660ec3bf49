"""mxtest - harness for mxgate's black-box integration tests.

Every tests/integration/test_*.py imports this module.  It drives the real
binary ($MXGATE_BIN) on 127.0.0.1 only, with dynamically chosen ports and
private temp folders (ctest runs test files in parallel), and every helper is
bounded in time: nothing here can hang a test run.

Environment
    MXGATE_BIN         the mxgate binary (default: $MXGATE_BUILD_DIR/mxgate,
                       then <source>/build/mxgate)
    MXGATE_SOURCE_DIR  the source tree (default: two folders up from here)
    MXGATE_BUILD_DIR   the build tree (informative)
    MXGATE_TIMEOUT_SCALE  multiply every default deadline (slow machines;
                       defaults to 3 when the binary looks like a sanitizer
                       build, i.e. its path contains "san")

Paths and processes
    mxgate_bin() -> str, source_dir() -> Path
    free_port(host="127.0.0.1") -> int      a port nobody listens on right now
    closed_port() -> int                    same; use for "a downstream that is down"
    port_is_free(port) -> bool              can we bind 127.0.0.1:port now
    pid_listens_on(pid, port) -> bool       that process owns a listener on port
    wait_for(cond, timeout=10, interval=0.05, what="...") -> value
        poll cond() until it returns something truthy; AssertionError on
        timeout (with `what` in the message).
    scaled(seconds) -> float                seconds * MXGATE_TIMEOUT_SCALE
    banner_waits(gw, n=100, pause=0.02) -> [seconds]   connect-to-220 times of
        n new connections, measured in a process of its own
    p99(xs) -> float                        nearest-rank 99th percentile
    BANNER_P99                              0.020 s * the scale: the criterion

Gateway (one mxgate process with its own config, queue, mailbox, log)
    gw = Gateway(tmpdir, extra=None, *, config_text=None, hostname="mx.example.test",
                 dns=True, tls=None, ipv6=False)
      tmpdir       a private folder (created if needed); everything lives in it
      extra        config changes merged into the default config: a dict
                   {"limits": {"max_recipients": 3}, "route default": {...}} or
                   an INI string with the same meaning.  A key set to None is
                   removed; a new section is appended.
      config_text  replace the whole config: the exact text, after replacing
                   @PORT@ @TMP@ @QUEUE@ @MAILBOX@ @SOCKET@ @DNSPORT@ @HOSTNAME@
      dns          True: run a StubDns on loopback and point [dns] forwarders
                   at it (gw.dns; add records with gw.dns.add(...)); False: no
                   [dns] forwarders line.
      tls          a TestCA (make_test_ca) -> [tls] cert_file/key_file set.
      ipv6         also listen on [::1]:<gw.port6> (gw.client(host="::1")
                   connects there).
    The default config: [server] hostname, listen = 127.0.0.1:<free port>,
    control_socket = <tmp>/control.sock (shorter path under /tmp if needed);
    [log] level = debug (stderr -> <tmp>/mxgate.log); [domains]
    accepted_domains = example.test; [queue] directory = <tmp>/queue;
    [auth] spf = dkim = dmarc = no; [route default] type = directory,
    directory = <tmp>/mailbox.
    Attributes: port, host, port6 (None unless ipv6), tmp (Path), config_path,
      queue_dir, mailbox_dir,
      control_socket, log_path, hostname, proc (Popen or None), dns (StubDns|None)
    gw.start(timeout=None) -> gw   run `mxgate run -c FILE`; returns once the
                                   process listens on the port and a probe got
                                   a reply (GatewayError with the log tail if
                                   it dies or times out).  Retries with a new
                                   port when the chosen one was taken.
    gw.stop(timeout=None) -> rc    SIGTERM, wait (bounded; SIGKILL + error on
                                   timeout).  GatewayError if a sanitizer report
                                   is in the log.
    gw.kill9()                     SIGKILL, wait
    gw.restart()                   stop (if running) + start, same port/config
    gw.is_running() -> bool
    gw.log_text() -> str;  gw.log_tail(n=60) -> str
    gw.wait_log(regex, timeout) -> re.Match
    gw.queue_files(states=("active","deferred","hold","quarantine")) -> list[Path]
    gw.queue_ids(states=...) -> set[str]      envelope file names
    gw.incoming_files() -> list[Path];  gw.msg_files() -> list[Path]
    gw.mailbox_files() -> list[Path]          delivered *.eml (recursive)
    gw.mailbox_messages() -> list[bytes]
    gw.wait_for_mailbox(n, timeout=None) -> list[bytes]   at least n messages
    gw.find_in_mailbox(marker) -> list[bytes]   delivered messages containing it
    gw.wait_for_marker(marker, timeout=None) -> bytes   the first such message
    gw.envelope_text(qid, timeout=None) -> str   the envelope file of qid
                                   (retried while it moves between folders)
    gw.cli(*args, timeout=None, check=False) -> CompletedProcess(text)
                                   runs `mxgate ARGS -c FILE`
    gw.client(**kw) -> RawClient    connected to the gateway (banner read)
    gw.send(mail_from, rcpts, data, **kw) -> queue id   one whole transaction
                                   through RawClient (asserts 250 2.0.0 queued)
    Context manager: `with Gateway(d) as gw:` starts and stops.

TLS
    ca = make_test_ca(tmpdir, hostnames=("mx.example.test", "localhost"),
                      ips=("127.0.0.1",), key_type="ec")
      -> TestCA(ca_cert, ca_key, cert, key, chain)  (paths, str); chain =
      server cert + CA cert.  Made with the openssl CLI.
    client_tls_context(ca_file=None, min_version=None, max_version=None,
                       verify=True) -> ssl.SSLContext

Raw SMTP
    c = RawClient(port, host="127.0.0.1", *, source=None, timeout=10,
                  banner=True)   source binds the client side (e.g.
                  "127.0.0.2"); banner=False when the server must not greet
                  first (PROXY).  c.banner is the greeting Reply.
    c.send(bytes|str)            exact bytes, one sendall (str -> UTF-8)
    c.send_split(data, chunk=1, delay=0.002)  several writes (TCP_NODELAY)
    c.cmd(line) -> Reply         line + CRLF, then one reply
    c.reply(timeout=None) -> Reply   one complete (multi-line) reply; raises
                                 ConnectionClosed on EOF, socket.timeout
    c.replies(n) -> list[Reply]
    c.ehlo(name="client.example.net") -> Reply (asserted 250)
    c.starttls(ctx=None, server_hostname="mx.example.test") -> Reply
                                 sends STARTTLS, expects 220, handshakes;
                                 asserts no plaintext bytes were pending
    c.tls_upgrade(ctx, server_hostname)   only the handshake
    c.pending(wait=QUIET) -> bytes  whatever arrives within `wait` (expecting b"");
                                 QUIET is 0.3 s (0.5 s for sanitizer builds)
    c.wait_closed(timeout=5) -> bytes   bytes read until EOF; AssertionError if
                                 the server keeps the connection open
    c.is_closed(wait=0.3) -> bool
    c.close(); context manager.
    Reply: .code (int), .lines (texts without the code), .text, .enh
      ("5.7.1" or None), .raw (bytes), .keywords (EHLO keywords, upper case),
      .is_final_line_ok; str(r) gives the wire text.
    assert_reply(reply, code, enh=None)   code may be an int or "5xx"-style
    QUEUED_RE / queued_id(reply) -> id   "250 2.0.0 Ok: queued as <16 HEX>"
    proxy_v1(src, dst, sport=40000, dport=25) -> bytes
    proxy_v2(src, dst, sport=40000, dport=25, command="PROXY", tlvs=b"") -> bytes

Messages
    make_message(subject=None, body="hello\r\n", sender=..., to=..., headers=())
        -> (bytes, marker)   CRLF, unique marker in Subject and Message-ID
    dot_stuff(data) -> bytes
    parse_headers(raw) -> list[(name, unfolded value)]
    header_values(raw, name) -> list[str]    in order, topmost first
    parse_received(value) -> dict(from_ (HELO), tcpinfo (text of the comment
        after it, e.g. "host.example [192.0.2.1]"), by, with_, id, for_
        ("<addr>" or None), via, comments (other comments), date) or None

DNS
    StubDns(records=None) - authoritative-looking UDP+TCP DNS on 127.0.0.1 for
    tests: .port, .add(name, rtype, rdata_text, ttl=60), .start(), .stop();
    unknown names get NXDOMAIN, known names without the type NOERROR/empty.
    ptr_name("198.51.100.7") -> "7.100.51.198.in-addr.arpa"
"""

import contextlib
import dataclasses
import email.utils
import errno
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

# ---------------------------------------------------------------- environment

HERE = Path(__file__).resolve().parent


def source_dir():
    d = os.environ.get("MXGATE_SOURCE_DIR")
    return Path(d) if d else HERE.parent.parent


def mxgate_bin():
    b = os.environ.get("MXGATE_BIN")
    if b:
        return b
    cands = []
    if os.environ.get("MXGATE_BUILD_DIR"):
        cands.append(Path(os.environ["MXGATE_BUILD_DIR"]) / "mxgate")
    cands.append(source_dir() / "build" / "mxgate")
    for c in cands:
        if c.exists():
            return str(c)
    raise RuntimeError("MXGATE_BIN is not set and no build/mxgate exists")


def _timeout_scale():
    s = os.environ.get("MXGATE_TIMEOUT_SCALE")
    if s:
        return float(s)
    try:
        b = mxgate_bin()
    except RuntimeError:
        return 1.0
    return 3.0 if "san" in b else 1.0


SCALE = _timeout_scale()


def scaled(seconds):
    return seconds * SCALE


# how long to listen for bytes that must NOT come (a reply the server must
# not send); short, because every such check costs this much wall time
QUIET = 0.3 if SCALE <= 1 else 0.5


def wait_for(cond, timeout=10.0, interval=0.05, what="condition"):
    """Poll cond() until it returns a truthy value (returned); AssertionError
    after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# The loop-responsiveness criterion of issues 11 and 13: a new connection's
# 220 banner within 20 ms at the 99th percentile while an attack or a stalled
# scanner is under way (x3 under sanitizers, like every deadline).
BANNER_P99 = 0.020 * SCALE


BANNER_PROBE = r"""
import json, socket, sys, time
host, port, n, pause, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
waits = []
for _ in range(n):
    t0 = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as s:
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(512)
            if not chunk:
                sys.exit("closed before the banner: %r" % buf)
            buf += chunk
        waits.append(time.monotonic() - t0)
        if not buf.startswith(b"220 "):
            sys.exit("banner: %r" % buf)
        s.sendall(b"QUIT\r\n")
    time.sleep(pause)
print(json.dumps(waits))
"""


def banner_waits(gw, n=100, pause=0.02):
    """n new connections, one after the other: seconds from connect() to the
    complete 220 line.  Measured in a process of its own, so the attacker
    threads of this one (and Python's GIL) never delay the clock."""
    p = subprocess.run([sys.executable, "-c", BANNER_PROBE, gw.host, str(gw.port), str(n),
                        str(pause), str(scaled(30))],
                       capture_output=True, text=True, timeout=scaled(120))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def p99(xs):
    """Nearest-rank 99th percentile."""
    xs = sorted(xs)
    return xs[max(0, -(-99 * len(xs) // 100) - 1)]


# ---------------------------------------------------------------- ports

def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (the kernel's choice)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


closed_port = free_port


def _listening_inodes(port):
    inodes = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    p = line.split()
                    if len(p) < 10:
                        continue
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    if lport == port and p[3] == "0A":
                        inodes.add(p[9])
        except OSError:
            pass
    return inodes


def pid_listens_on(pid, port):
    """True when process pid owns a listening TCP socket on port."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


# ---------------------------------------------------------------- SMTP replies

class ProtocolError(AssertionError):
    pass


class ConnectionClosed(AssertionError):
    pass


_ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclasses.dataclass
class Reply:
    code: int
    lines: list
    raw: bytes

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enh(self):
        if not self.lines:
            return None
        m = _ENH_RE.match(self.lines[0])
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None

    @property
    def keywords(self):
        """EHLO keywords (upper case) -> rest of the line."""
        kw = {}
        for line in self.lines[1:]:
            parts = line.split(None, 1)
            if parts:
                kw[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
        return kw

    def __str__(self):
        return self.raw.decode("utf-8", "replace").rstrip("\r\n")


def assert_reply(reply, code, enh=None):
    """code: 250 or "5xx"/"4xx"; enh: "5.7.1" (exact) or "5.7." (prefix)."""
    if isinstance(code, str):
        ok = str(reply.code)[0] == code[0]
    else:
        ok = reply.code == code
    assert ok, f"expected {code}{' ' + enh if enh else ''}, got: {reply}"
    if enh is not None:
        got = reply.enh or ""
        good = got.startswith(enh) if enh.endswith(".") else got == enh
        assert good, f"expected enhanced status {enh}, got: {reply}"
    return reply


QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-F]{16})$")


def queued_id(reply):
    """The queue id in "250 2.0.0 Ok: queued as ID" (asserted exactly)."""
    m = QUEUED_RE.match(str(reply))
    assert m, f"expected '250 2.0.0 Ok: queued as <16 HEX>', got: {reply}"
    return m.group(1)


# ---------------------------------------------------------------- raw client

class RawClient:
    """A plain socket speaking exact bytes; replies parsed strictly (CRLF)."""

    def __init__(self, port, host="127.0.0.1", *, source=None, timeout=10.0, banner=True,
                 nodelay=True):
        self.timeout = timeout
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        try:
            self.sock.connect((host, port))
        except Exception:
            self.sock.close()
            raise
        self.buf = b""
        self.eof = False
        self.tls = False
        self.banner = self.reply() if banner else None

    # -- io
    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def send_split(self, data, chunk=1, delay=0.002):
        if isinstance(data, str):
            data = data.encode("utf-8")
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i:i + chunk])
            if delay:
                time.sleep(delay)

    def _fill(self, timeout):
        """Read more bytes into buf; False on EOF."""
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        except ssl.SSLError as e:
            # an abrupt close inside TLS counts as a close
            if "EOF" in str(e) or "UNEXPECTED" in str(e).upper():
                d = b""
            else:
                raise
        finally:
            try:
                self.sock.settimeout(self.timeout)
            except OSError:
                pass
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                if not line.endswith(b"\r\n"):
                    raise ProtocolError(f"server line not ended by CRLF: {line!r}")
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no complete reply line; have {self.buf!r}")
            if not self._fill(left):
                raise ConnectionClosed(f"connection closed; partial data {self.buf!r}")

    def reply(self, timeout=None):
        """One complete reply (multi-line aware)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        raw = b""
        lines = []
        code = None
        while True:
            line = self._line(deadline)
            raw += line
            text = line[:-2].decode("utf-8", "replace")
            m = re.match(r"^(\d{3})([ -]|$)(.*)$", text, re.S)
            if not m:
                raise ProtocolError(f"malformed reply line {line!r}")
            c = int(m.group(1))
            if code is not None and c != code:
                raise ProtocolError(f"reply code changed inside a multi-line reply: {raw!r}")
            code = c
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n")
        return self.reply(timeout)

    def ehlo(self, name="client.example.net"):
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, f"EHLO refused: {r}"
        return r

    def pending(self, wait=None):
        """Bytes that arrive within `wait` seconds (default QUIET; consumes
        them).  For "the server must not answer" checks."""
        if wait is None:
            wait = QUIET
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                break
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                self._fill(left)
                continue
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                break
            if not self._fill(max(left, 0.01)):
                break
        d, self.buf = self.buf, b""
        return d

    def wait_closed(self, timeout=5.0):
        """Read until EOF; returns what was read.  AssertionError if the
        connection is still open after timeout."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"server did not close the connection within {timeout}s;"
                                     f" got {self.buf!r}")
            try:
                self._fill(left)
            except socket.timeout:
                continue
            except OSError:
                self.eof = True
        d, self.buf = self.buf, b""
        return d

    def is_closed(self, wait=0.3):
        try:
            self.wait_closed(wait)
            return True
        except AssertionError:
            return False

    def tls_upgrade(self, ctx, server_hostname="mx.example.test"):
        assert self.buf == b"", f"plaintext bytes pending before the TLS handshake: {self.buf!r}"
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True
        return self.sock

    def starttls(self, ctx=None, server_hostname="mx.example.test"):
        r = self.cmd("STARTTLS")
        assert r.code == 220, f"STARTTLS refused: {r}"
        if ctx is None:
            ctx = client_tls_context(verify=False)
        self.tls_upgrade(ctx, server_hostname)
        return r

    # -- a whole transaction
    def transaction(self, mail_from, rcpts, data, *, mail_params="", expect_queued=True):
        """MAIL, RCPT..., DATA, message (dot-stuffed here), returns the final
        reply (asserted queued when expect_queued)."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        r = self.cmd(f"MAIL FROM:<{mail_from}>{(' ' + mail_params) if mail_params else ''}")
        assert r.code == 250, f"MAIL refused: {r}"
        for rc in rcpts:
            r = self.cmd(f"RCPT TO:<{rc}>")
            assert r.code == 250, f"RCPT {rc} refused: {r}"
        r = self.cmd("DATA")
        assert r.code == 354, f"DATA refused: {r}"
        if isinstance(data, str):
            data = data.encode("utf-8")
        body = dot_stuff(data)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.send(body + b".\r\n")
        r = self.reply()
        if expect_queued:
            queued_id(r)
        return r


# ---------------------------------------------------------------- PROXY protocol

def proxy_v1(src, dst, sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src, dst, sport=40000, dport=25, command="PROXY", tlvs=b""):
    cmd = 0x21 if command == "PROXY" else 0x20
    if command != "PROXY":
        return PROXY_V2_SIG + bytes([cmd, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    if s.version == 4:
        fam = 0x11
        addr = s.packed + d.packed + struct.pack("!HH", sport, dport)
    else:
        fam = 0x21
        addr = s.packed + d.packed + struct.pack("!HH", sport, dport)
    payload = addr + tlvs
    return PROXY_V2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(payload)) + payload


# ---------------------------------------------------------------- messages

def dot_stuff(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", data)
    return out


def make_message(subject=None, body="hello\r\n", sender="sender@client.example.net",
                 to="user@example.test", headers=()):
    """A small RFC 5322 message with CRLF endings; returns (bytes, marker)."""
    marker = "m" + uuid.uuid4().hex[:16]
    subject = f"{subject} {marker}" if subject else f"test {marker}"
    hdr = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: <{marker}@client.example.net>",
    ]
    hdr.extend(headers)
    text = "\r\n".join(hdr) + "\r\n\r\n" + body
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode("utf-8"), marker


def parse_headers(raw):
    """Header block of raw (bytes or str) -> [(name, unfolded value)]."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    raw = raw.replace("\r\n", "\n")
    head = raw.split("\n\n", 1)[0]
    out = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and out:
            n, v = out[-1]
            out[-1] = (n, v + " " + line.strip())
        elif ":" in line:
            n, v = line.split(":", 1)
            out.append((n.strip(), v.strip()))
    return out


def header_values(raw, name):
    return [v for n, v in parse_headers(raw) if n.lower() == name.lower()]


def parse_received(value):
    """A Received header value -> dict: from_ (HELO name), tcpinfo (text of
    the comment after it), by, with_, id, for_ ("<addr>" or None), via,
    comments (list of the other parenthesised comments), date (str); None if
    the value has no "from ... ; date" shape."""
    v = " ".join(value.split())
    if ";" not in v:
        return None
    clauses, date = v.rsplit(";", 1)
    m = re.match(r"^from\s+(\S+)(?:\s+\(([^()]*)\))?(.*)$", clauses, re.S)
    if not m:
        return None
    d = {"from_": m.group(1), "tcpinfo": m.group(2), "date": date.strip()}
    rest = m.group(3)
    d["comments"] = re.findall(r"\(([^()]*)\)", rest)
    bare = re.sub(r"\([^()]*\)", " ", rest)
    for kw, key in (("by", "by"), ("via", "via"), ("with", "with_"), ("id", "id"),
                    ("for", "for_")):
        mm = re.search(r"(?:^|\s)%s\s+(\S+)" % kw, bare, re.I)
        d[key] = mm.group(1) if mm else None
    return d


# ---------------------------------------------------------------- TLS

@dataclasses.dataclass
class TestCA:
    ca_cert: str
    ca_key: str
    cert: str
    key: str
    chain: str


TestCA.__test__ = False  # not a pytest test class


def _openssl(*args, cwd=None):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {p.stderr}")
    return p


def make_test_ca(tmpdir, hostnames=("mx.example.test", "localhost"), ips=("127.0.0.1", "::1"),
                 key_type="ec", name="server"):
    """A throw-away CA and a server certificate for hostnames/ips (SAN)."""
    d = Path(tmpdir) / "tls"
    d.mkdir(parents=True, exist_ok=True)
    if key_type == "ec":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    else:
        newkey = ["-newkey", "rsa:2048"]
    ca_key, ca_cert = d / "ca.key", d / "ca.pem"
    if not ca_cert.exists():
        _openssl("req", "-x509", *newkey, "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
                 "-days", "30", "-subj", "/CN=mxgate test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _openssl("req", "-new", *newkey, "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={hostnames[0]}")
    san = ",".join([f"DNS:{h}" for h in hostnames] + [f"IP:{i}" for i in ips])
    ext = d / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "30", "-sha256",
             "-extfile", str(ext))
    chain = d / f"{name}-chain.pem"
    chain.write_text(cert.read_text() + ca_cert.read_text())
    os.chmod(key, 0o600)
    return TestCA(str(ca_cert), str(ca_key), str(cert), str(key), str(chain))


def client_tls_context(ca_file=None, min_version=None, max_version=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify and ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


# ---------------------------------------------------------------- stub DNS

def ptr_name(addr):
    return ipaddress.ip_address(addr).reverse_pointer


class StubDns:
    """A tiny authoritative-looking DNS server on 127.0.0.1 (UDP and TCP)."""

    def __init__(self, records=None):
        import dns.message  # noqa: F401  (dnspython, python3-dnspython)
        self.records = {}
        self.lock = threading.Lock()
        self.queries = []
        self.blackholes = set()
        for (name, rtype), vals in (records or {}).items():
            for v in vals:
                self.add(name, rtype, v)
        self.port = None
        self._stop = threading.Event()
        self._threads = []
        self.udp = self.tcp = None

    def add(self, name, rtype, rdata, ttl=60):
        key = (name.lower().rstrip("."), rtype.upper())
        with self.lock:
            self.records.setdefault(key, []).append((rdata, ttl))

    def clear(self):
        with self.lock:
            self.records.clear()

    def blackhole(self, zone):
        """Never answer names at or under zone (a DNS timeout)."""
        with self.lock:
            self.blackholes.add(zone.lower().rstrip("."))

    def count(self, name, rtype="A"):
        """How many queries for name/rtype arrived."""
        name = name.lower().rstrip(".")
        with self.lock:
            return sum(1 for q in self.queries if q == (name, rtype))

    def _answer(self, wire):
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset
        try:
            q = dns.message.from_wire(wire)
        except Exception:
            return None
        resp = dns.message.make_response(q)
        resp.flags |= 0x0400 | 0x0080  # AA, RA (unbound forwards with RD)
        if not q.question:
            resp.set_rcode(dns.rcode.FORMERR)
            return resp.to_wire()
        qq = q.question[0]
        name = qq.name.to_text().lower().rstrip(".")
        rtype = dns.rdatatype.to_text(qq.rdtype)
        with self.lock:
            self.queries.append((name, rtype))
            if any(name == z or name.endswith("." + z) for z in self.blackholes):
                return None
            vals = list(self.records.get((name, rtype), []))
            exists = any(k[0] == name for k in self.records)
            cname = list(self.records.get((name, "CNAME"), []))
        if vals:
            ttl = vals[0][1]
            rr = dns.rrset.from_text_list(qq.name, ttl, dns.rdataclass.IN, qq.rdtype,
                                          [v for v, _ in vals])
            resp.answer.append(rr)
        elif cname and rtype != "CNAME":
            rr = dns.rrset.from_text_list(qq.name, cname[0][1], dns.rdataclass.IN, "CNAME",
                                          [cname[0][0]])
            resp.answer.append(rr)
        elif not exists:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        return resp.to_wire()

    def start(self):
        for _ in range(20):
            port = free_port()
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                u.close()
                t.close()
                continue
            t.listen(16)
            self.udp, self.tcp, self.port = u, t, port
            break
        else:
            raise RuntimeError("StubDns: no free port")
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        for fn in (self._udp_loop, self._tcp_loop):
            th = threading.Thread(target=fn, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def _udp_loop(self):
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            out = self._answer(data)
            if out:
                try:
                    self.udp.sendto(out, peer)
                except OSError:
                    pass

    def _tcp_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(c,), daemon=True).start()

    def _tcp_conn(self, c):
        c.settimeout(5)
        try:
            while True:
                hdr = self._recvn(c, 2)
                if not hdr:
                    return
                (n,) = struct.unpack("!H", hdr)
                data = self._recvn(c, n)
                if not data:
                    return
                out = self._answer(data)
                if out:
                    c.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            c.close()

    @staticmethod
    def _recvn(c, n):
        b = b""
        while len(b) < n:
            d = c.recv(n - len(b))
            if not d:
                return None
            b += d
        return b

    def stop(self):
        self._stop.set()
        for s in (self.udp, self.tcp):
            if s:
                s.close()
        for th in self._threads:
            th.join(2)


# ---------------------------------------------------------------- config

def _parse_ini_overrides(text):
    """INI text -> {section: {key: value}} (order kept); comments dropped."""
    out = {}
    sec = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            sec = line[1:-1].strip()
            out.setdefault(sec, {})
            continue
        if "=" not in line or sec is None:
            raise ValueError(f"cannot parse config override line: {raw!r}")
        k, v = line.split("=", 1)
        out[sec][k.strip()] = v.strip()
    return out


def render_config(sections):
    parts = []
    for sec, kv in sections.items():
        parts.append(f"[{sec}]")
        for k, v in kv.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "yes" if v else "no"
            parts.append(f"{k} = {v}")
        parts.append("")
    return "\n".join(parts)


class GatewayError(AssertionError):
    pass


_SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                           r"SUMMARY: (Address|Undefined|Leak)")


class Gateway:
    """One mxgate process with a private config, queue, mailbox and log."""

    def __init__(self, tmpdir, extra=None, *, config_text=None, hostname="mx.example.test",
                 dns=True, tls=None, ipv6=False):
        self.tmp = Path(tmpdir)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.port6 = free_port("::1") if ipv6 else None
        self.hostname = hostname
        self.queue_dir = self.tmp / "queue"
        self.mailbox_dir = self.tmp / "mailbox"
        self.config_path = self.tmp / "mxgate.conf"
        self.log_path = self.tmp / "mxgate.log"
        sock = self.tmp / "control.sock"
        self._sockdir = None
        if len(str(sock)) > 100:
            self._sockdir = tempfile.mkdtemp(prefix="mxs", dir="/tmp")
            sock = Path(self._sockdir) / "control.sock"
        self.control_socket = sock
        self.proc = None
        self.tls = tls
        self.dns = StubDns().start() if dns else None
        self._config_text = config_text
        if isinstance(extra, str):
            extra = _parse_ini_overrides(extra)
        self._extra = extra or {}
        self._logfh = None
        self.write_config()

    # -- config
    def default_sections(self):
        s = {
            "server": {
                "hostname": self.hostname,
                "listen": f"{self.host}:{self.port}"
                          + (f", [::1]:{self.port6}" if self.port6 else ""),
                "control_socket": str(self.control_socket),
            },
            "limits": {},
            "access": {},
            "domains": {"accepted_domains": "example.test"},
            "queue": {"directory": str(self.queue_dir)},
            "log": {"level": "debug"},
            "auth": {"spf": "no", "dkim": "no", "dmarc": "no"},
            "route default": {"type": "directory", "directory": str(self.mailbox_dir)},
        }
        # [dns] trust_anchor_file defaults to auto (DNSSEC on where the real
        # root anchor is installed): the tests' loopback zones cannot
        # validate against it, so a test that wants DNSSEC sets its own
        # anchor (test_delivery_dane.py, test_auth.py) or auto with a test
        # root_anchor_file (test_dnssec_auto.py); None removes the key
        s["dns"] = {"trust_anchor_file": "none"}
        if self.dns:
            s["dns"].update({"forwarders": f"127.0.0.1@{self.dns.port}", "timeout": "2s"})
        if self.tls:
            s["tls"] = {"cert_file": self.tls.chain, "key_file": self.tls.key}
        return s

    def sections(self):
        s = self.default_sections()
        for sec, kv in self._extra.items():
            tgt = s.setdefault(sec, {})
            for k, v in (kv or {}).items():
                if v is None:
                    tgt.pop(k, None)
                else:
                    tgt[k] = v
        return {k: v for k, v in s.items() if v}

    def config_text(self):
        if self._config_text is not None:
            t = self._config_text
            for k, v in {"@PORT@": str(self.port), "@TMP@": str(self.tmp),
                         "@QUEUE@": str(self.queue_dir), "@MAILBOX@": str(self.mailbox_dir),
                         "@SOCKET@": str(self.control_socket), "@HOSTNAME@": self.hostname,
                         "@DNSPORT@": str(self.dns.port if self.dns else 0)}.items():
                t = t.replace(k, v)
            return t
        return render_config(self.sections())

    def write_config(self):
        self.config_path.write_text(self.config_text())

    def set_extra(self, extra):
        """Replace the overrides and rewrite the config (e.g. before reload)."""
        if isinstance(extra, str):
            extra = _parse_ini_overrides(extra)
        self._extra = extra or {}
        self.write_config()

    # -- process
    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def _probe_needs_proxy(self):
        tp = self.sections().get("access", {}).get("trusted_proxies")
        if not tp:
            return False
        for item in re.split(r"[,\s]+", tp.strip()):
            if not item:
                continue
            try:
                if ipaddress.ip_address(self.host) in ipaddress.ip_network(item, strict=False):
                    return True
            except ValueError:
                pass
        return False

    def _probe(self, deadline):
        """Connect once and read a reply; True when the server answered."""
        try:
            c = RawClient(self.port, self.host, timeout=max(0.5, deadline - time.monotonic()),
                          banner=False)
        except OSError:
            return False
        try:
            if self._probe_needs_proxy():
                c.send(b"PROXY UNKNOWN\r\n")
            r = c.reply()
            if r.code in (220,):
                try:
                    c.send(b"QUIT\r\n")
                    c.wait_closed(max(0.5, deadline - time.monotonic()))
                except (OSError, AssertionError):
                    pass
            return True
        except (OSError, AssertionError):
            return False
        finally:
            c.close()

    def start(self, timeout=None):
        timeout = timeout if timeout is not None else scaled(20)
        assert not self.is_running(), "gateway already running"
        for attempt in range(3):
            self.write_config()
            if self._logfh:
                self._logfh.close()
            self._logfh = open(self.log_path, "ab")
            start_off = self.log_path.stat().st_size
            self.proc = subprocess.Popen([mxgate_bin(), "run", "-c", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=self._logfh,
                                         stderr=subprocess.STDOUT, cwd=str(self.tmp),
                                         start_new_session=True)
            deadline = time.monotonic() + timeout
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    newlog = self.log_text()[start_off:]
                    if ("in use" in newlog.lower() and self._config_text is None
                            and attempt < 2):
                        self.port = free_port()
                        if self.port6:
                            self.port6 = free_port("::1")
                        break  # retry on a new port
                    raise GatewayError(f"mxgate exited with status {rc} during start-up;"
                                       f" log tail:\n{self.log_tail()}")
                if pid_listens_on(self.proc.pid, self.port):
                    if self._probe(min(deadline, time.monotonic() + scaled(5))):
                        return self
                if time.monotonic() > deadline:
                    self.kill9()
                    raise GatewayError(f"mxgate did not accept on {self.host}:{self.port}"
                                       f" within {timeout}s; log tail:\n{self.log_tail()}")
                time.sleep(0.02)
        raise GatewayError(f"could not start mxgate; log tail:\n{self.log_tail()}")

    def _check_sanitizers(self):
        log = self.log_text()
        m = _SANITIZER_RE.search(log)
        if m:
            i = max(0, m.start() - 200)
            raise GatewayError(f"sanitizer report in the mxgate log:\n{log[i:i + 6000]}")

    def stop(self, timeout=None, check=True):
        """SIGTERM and wait; returns the exit status."""
        timeout = timeout if timeout is not None else scaled(15)
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise GatewayError(f"mxgate did not exit within {timeout}s of SIGTERM;"
                                   f" log tail:\n{self.log_tail()}")
        self.proc = None
        if self._logfh:
            self._logfh.close()
            self._logfh = None
        if check:
            self._check_sanitizers()
        return rc

    def kill9(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = self.proc.wait(10)
        self.proc = None
        return rc

    def restart(self, timeout=None):
        if self.is_running():
            self.stop()
        self.proc = None
        return self.start(timeout)

    def close(self):
        """Stop everything without raising (teardown of a failed test)."""
        with contextlib.suppress(Exception):
            if self.is_running():
                self.stop(check=False)
        with contextlib.suppress(Exception):
            self.kill9()
        if self.dns:
            with contextlib.suppress(Exception):
                self.dns.stop()
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        try:
            if et is None:
                self.stop()
        finally:
            self.close()

    # -- logs
    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, regex, timeout=None):
        rx = re.compile(regex)
        return wait_for(lambda: rx.search(self.log_text()), timeout or scaled(10),
                        what=f"log line /{regex}/")

    # -- queue and mailbox
    def queue_files(self, states=("active", "deferred", "hold", "quarantine")):
        out = []
        for st in states:
            d = self.queue_dir / st
            if d.is_dir():
                out.extend(sorted(p for p in d.iterdir() if p.is_file()
                                  and not p.name.startswith(".")))
        return out

    def queue_ids(self, states=("active", "deferred", "hold", "quarantine")):
        return {p.name.split(".")[0] for p in self.queue_files(states)}

    def incoming_files(self):
        d = self.queue_dir / "incoming"
        return sorted(p for p in d.iterdir()) if d.is_dir() else []

    def msg_files(self):
        d = self.queue_dir / "msg"
        return sorted(p for p in d.iterdir()) if d.is_dir() else []

    def mailbox_files(self):
        if not self.mailbox_dir.is_dir():
            return []
        return sorted(p for p in self.mailbox_dir.rglob("*.eml")
                      if p.is_file() and not p.name.startswith("."))

    def mailbox_messages(self):
        out = []
        for p in self.mailbox_files():
            with contextlib.suppress(OSError):
                out.append(p.read_bytes())
        return out

    def wait_for_mailbox(self, n, timeout=None):
        timeout = timeout if timeout is not None else scaled(15)
        wait_for(lambda: len(self.mailbox_files()) >= n, timeout,
                 what=f"{n} message(s) in {self.mailbox_dir} (have {len(self.mailbox_files())})")
        return self.mailbox_messages()

    def envelope_text(self, qid, timeout=None):
        """Text of the envelope of qid; it may move between state folders
        while we look, so retry until it is read."""
        def attempt():
            for p in self.queue_files():
                if p.name.split(".")[0] == qid:
                    try:
                        return p.read_text("utf-8", "replace")
                    except FileNotFoundError:
                        return None
            return None
        return wait_for(attempt, timeout or scaled(5), what=f"envelope of {qid}")

    def find_in_mailbox(self, marker):
        m = marker.encode() if isinstance(marker, str) else marker
        return [x for x in self.mailbox_messages() if m in x]

    def wait_for_marker(self, marker, timeout=None):
        timeout = timeout if timeout is not None else scaled(15)
        return wait_for(lambda: self.find_in_mailbox(marker), timeout,
                        what=f"message {marker} in the mailbox")[0]

    # -- CLI
    def cli(self, *args, timeout=None, check=False):
        p = subprocess.run([mxgate_bin(), *args, "-c", str(self.config_path)],
                           capture_output=True, text=True, timeout=timeout or scaled(20),
                           cwd=str(self.tmp))
        if check and p.returncode != 0:
            raise AssertionError(f"mxgate {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout}{p.stderr}")
        return p

    # -- SMTP
    def client(self, host=None, **kw):
        if host is not None and ":" in host:
            assert self.port6, "Gateway(..., ipv6=True) to listen on ::1"
            return RawClient(self.port6, host, **kw)
        return RawClient(self.port, host or self.host, **kw)

    def send(self, mail_from, rcpts, data, *, ehlo="client.example.net", mail_params="",
             tls_ctx=None, **kw):
        """One whole transaction on a new connection; returns the queue id."""
        with self.client(**kw) as c:
            assert c.banner.code == 220, f"banner: {c.banner}"
            c.ehlo(ehlo)
            if tls_ctx is not None:
                c.starttls(tls_ctx, self.hostname)
                c.ehlo(ehlo)
            r = c.transaction(mail_from, rcpts, data, mail_params=mail_params)
            qid = queued_id(r)
            with contextlib.suppress(OSError, AssertionError):
                c.cmd("QUIT")
            return qid


def port_is_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True
