"""Faults, part 3 - resource limits (issue 6).

Per-connection memory is bounded: a 50 MB message streams to disk while
mxgate's resident set grows by no more than a few MiB; so do ten parallel
5 MB messages.  Under AddressSanitizer the freed-memory quarantine is
capped for the daemon so RSS still measures what mxgate keeps.

Out of file descriptors (issue 11): with the daemon's RLIMIT_NOFILE lowered
(prlimit) and the table filled by client connections, accept() fails with
EMFILE; the listeners pause instead of retrying at once (CPU time from
/proc/PID/stat stays low, a few log lines instead of a flood), and the
clients waiting in the backlog - and new ones - are served once
descriptors are free again.  A delivery retry that cannot read its
envelope then (EMFILE) keeps the message and reads it again later."""

import contextlib
import os
import re
import resource
import socket
import threading
import time
import urllib.request

import pytest

from downstream import Downstream, relay_extra
from mxtest import assert_reply, free_port, make_message, queued_id, scaled, wait_for

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def small_quarantine(monkeypatch):
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") +
                       "quarantine_size_mb=1:thread_local_quarantine_size_kb=64")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def big_body(size):
    line = b"b" * 998 + b"\r\n"
    return line * (size // len(line))


def stream(gw, data):
    with gw.client(timeout=scaled(60)) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        view = memoryview(data)
        for i in range(0, len(data), 256 * 1024):
            c.sock.sendall(view[i:i + 256 * 1024])
        c.send(b".\r\n")
        return queued_id(c.reply(timeout=scaled(60)))


def watch(pid, peak, stop):
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], rss(pid))
        except (OSError, AssertionError):
            return
        time.sleep(0.01)


def holding_gateway(gateway, size_limit):
    """A gateway that keeps what it accepts (its downstream is unreachable),
    warmed up with one small message so every lazy allocation has
    happened; returns it and its RSS then."""
    gw = gateway({"limits": {"message_size_limit": size_limit},
                  "route default": {"directory": None, "type": "smtp",
                                    "hosts": "127.0.0.1:9", "tls": "none",
                                    "connect_timeout": "1s"},
                  "log": {"level": "info"}})
    gw.send(SENDER, [RCPT], make_message()[0])
    time.sleep(0.2)
    return gw, rss(gw.proc.pid)


@contextlib.contextmanager
def rss_peak(pid, base):
    """Samples pid's RSS while the block runs; peak[0] is the highest."""
    peak = [base]
    stop = threading.Event()
    w = threading.Thread(target=watch, args=(pid, peak, stop), daemon=True)
    w.start()
    try:
        yield peak
    finally:
        stop.set()
        w.join(5)


def test_fifty_megabyte_message_streams_without_rss_growth(gateway):
    gw, base = holding_gateway(gateway, "100M")
    head, _ = make_message(subject="fifty", body="")
    data = head + big_body(50 * MiB)
    with rss_peak(gw.proc.pid, base) as peak:
        qid = stream(gw, data)
    grew = peak[0] - base
    assert grew < 8 * MiB, f"RSS grew by {grew / MiB:.1f} MiB streaming a 50 MB message"
    assert (gw.queue_dir / "msg" / qid).stat().st_size == len(data)


def test_parallel_big_messages_bounded(gateway):
    gw, base = holding_gateway(gateway, "20M")
    head, _ = make_message(subject="five", body="")
    data = head + big_body(5 * MiB)
    results = []
    ths = [threading.Thread(target=lambda: results.append(stream(gw, data)))
           for _ in range(10)]
    with rss_peak(gw.proc.pid, base) as peak:
        for t in ths:
            t.start()
        for t in ths:
            t.join(scaled(60))
    assert len(results) == 10
    grew = peak[0] - base
    assert grew < 16 * MiB, f"RSS grew by {grew / MiB:.1f} MiB for 10 x 5 MB in parallel"


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """utime + stime of every thread of pid (/proc/PID/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_out_of_descriptors_pauses_without_spinning(gateway):
    mport = free_port()
    gw = gateway({"limits": {"max_connections_per_ip": "1000"}, "log": {"level": "info"},
                  "metrics": {"listen": f"127.0.0.1:{mport}"}})
    pid = gw.proc.pid
    # one whole transaction first, so every lazily opened descriptor exists
    gw.send(SENDER, [RCPT], make_message(subject="warm-up")[0])
    gw.wait_for_mailbox(1)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    spare = 8
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fd_count(pid) + spare, hard))
    socks = []
    try:
        # more connections than descriptors: the kernel completes them all
        # (listen backlog); mxgate can accept only `spare` of them
        for _ in range(spare + 8):
            socks.append(socket.create_connection((gw.host, gw.port), timeout=scaled(5)))
        gw.wait_log(r"accept (paused|failed) error=\"Too many open files\"")
        lines_before = len(gw.log_text().splitlines())
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        log_window = gw.log_text().splitlines()[lines_before:]
        used = (cpu1 - cpu0) / (t1 - t0)
        # a spinning accept loop uses a whole core and logs every try
        assert used < 0.5, f"daemon used {used:.0%} of a core while out of descriptors"
        accept_lines = [ln for ln in log_window if re.search(r"accept (failed|paused)", ln)]
        assert len(accept_lines) <= 12, f"{len(accept_lines)} accept lines in 2 s"
        assert gw.is_running()
    finally:
        for s in socks:
            s.close()
    # descriptors come back as the sessions see EOF: under the same limit,
    # new clients are served again

    def served():
        try:
            with gw.client(timeout=scaled(2)) as c:
                return c.banner.code == 220
        except (OSError, AssertionError):
            return False
    wait_for(served, scaled(10), what="a banner after descriptors were freed")
    gw.send(SENDER, [RCPT], make_message(subject="after")[0])
    gw.wait_for_mailbox(2)
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=scaled(5)) as r:
        body = r.read().decode()
    m = re.search(r'^mxgate_accept_pauses_total\{error="EMFILE"\} (\d+)', body, re.M)
    assert m and int(m.group(1)) >= 1, body


def test_envelope_unreadable_for_lack_of_descriptors_is_retried(gateway):
    ds = Downstream().start()
    try:
        ds.rcpt_replies[RCPT] = ["451 4.3.0 try again later"]
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"],
                                 queue={"retry_schedule": "3s", "max_lifetime": "120s"}) |
                     {"limits": {"max_connections_per_ip": "1000"}})
        pid = gw.proc.pid
        data, marker = make_message(subject="emfile", sender=SENDER)
        qid = gw.send(SENDER, [RCPT], data)
        gw.wait_log(qid + r" .*status=deferred")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        spare = 6
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (fd_count(pid) + spare, hard))
        socks = []
        try:
            for _ in range(spare + 6):
                socks.append(socket.create_connection((gw.host, gw.port), timeout=scaled(5)))
            gw.wait_log(r"accept paused")
            # the retry (3 s after the deferral) cannot open the envelope
            gw.wait_log(qid + r" status=retry op=attempt error=\(envelope unreadable: "
                              r"Too many open files\)", timeout=scaled(15))
        finally:
            for s in socks:
                s.close()
        assert "status=dropped" not in gw.log_text()
        # descriptors are back: read again at the next retry and delivered
        wait_for(lambda: ds.find(marker), scaled(20), what="delivery after the read error")
        assert len(ds.find(marker)) == 1
        wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
    finally:
        ds.stop()
