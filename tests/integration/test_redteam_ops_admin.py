"""Issue 16 red team: the metrics listener against oversized request lines
and headers, pipelined requests from a client that never reads, and
`mxgate status` / `reload` with a broken config file."""

import os
import socket
import time

from mxtest import free_port, scaled, wait_for
from test_ops_tools import _try_scrape, broken


def test_metrics_oversized_and_pipelined(gateway):
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}", "request_timeout": "2s",
                              "max_connections": "4"}})
    assert _try_scrape(mport).startswith(b"HTTP/1.0 200")
    # a 1 MB request line and a 1 MB header: refused or closed, no 200
    for req in (b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nX: " + b"b" * (1 << 20) + b"\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", mport), timeout=scaled(5))
        try:
            s.sendall(req)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(scaled(5))
        try:
            got = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            got = b""
        assert not got.startswith(b"HTTP/1.1 200"), got[:200]
        s.close()
    # 5000 pipelined scrapes from a client that never reads: the daemon
    # answers one at a time (the output stays bounded by the socket) and
    # drops the connection after the deadline
    time.sleep(scaled(3))   # the oversized ones are gone (deadline)
    base = sockets(gw.proc.pid)
    p = socket.create_connection(("127.0.0.1", mport), timeout=scaled(5))
    p.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    p.setblocking(False)
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 5000
    sent = 0
    end = time.monotonic() + scaled(3)
    while sent < len(burst) and time.monotonic() < end:
        try:
            sent += p.send(burst[sent:])
        except BlockingIOError:
            time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            break
    p.setblocking(True)
    assert p.recv(64).startswith(b"HTTP/1.1 200")   # answered, then stuck
    assert sockets(gw.proc.pid) == base + 1
    wait_for(lambda: sockets(gw.proc.pid) == base, scaled(10),
             what="the non-reading pipeliner dropped")
    p.close()
    wait_for(lambda: _try_scrape(mport), scaled(10), what="scrape after the attacks")
    assert gw.proc.poll() is None


def sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_status_and_reload_with_broken_config(gateway):
    gw = gateway()
    line = broken(gw)
    st = gw.cli("status")
    assert st.returncode == 0 and "pid:" in st.stdout, st.stdout + st.stderr
    rl = gw.cli("reload")
    assert rl.returncode != 0, rl.stdout
    assert f":{line}" in rl.stdout + rl.stderr, rl.stdout + rl.stderr
    # the daemon kept running on the old config and still answers
    assert gw.proc.poll() is None
    assert gw.cli("status").returncode == 0
