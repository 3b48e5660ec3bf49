"""The promise behind "250": a message acknowledged is on disk (kill -9 right
after the reply loses nothing); a message not acknowledged leaves nothing
behind (client vanished mid-DATA, oversize, timeout); idle clients are
closed by the timeouts."""

import socket
import struct
import subprocess
import time

import pytest

from mxtest import (RawClient, assert_reply, closed_port, make_message, queued_id, scaled,
                    wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def smtp_route_down():
    return {"route default": {"type": "smtp", "directory": None,
                              "hosts": f"127.0.0.1:{closed_port()}", "tls": "none",
                              "connect_timeout": "1s"}}


def send_no_quit(gw, msg):
    """A transaction; returns (client still open, queue id)."""
    c = gw.client()
    c.ehlo()
    qid = queued_id(c.transaction(SENDER, [RCPT], msg))
    return c, qid


def test_kill9_after_250_message_stays_queued(gateway):
    gw = gateway(smtp_route_down())
    msg, marker = make_message()
    c, qid = send_no_quit(gw, msg)
    gw.kill9()                      # right after the 250, before anything else
    c.close()
    assert qid in gw.queue_ids(), f"{qid} missing after kill -9: {gw.queue_files()}"
    assert (gw.queue_dir / "msg" / qid).read_bytes() == msg
    gw.start()
    assert qid in gw.queue_ids(), f"{qid} lost at start-up: {gw.queue_files()}"
    assert (gw.queue_dir / "msg" / qid).read_bytes() == msg
    assert not gw.incoming_files()
    try:
        p = gw.cli("queue", "list", timeout=scaled(10))
    except subprocess.TimeoutExpired:
        p = None
    if p is not None and p.returncode == 0:     # the control socket is someone else's test
        assert qid in p.stdout, f"queue list does not show {qid}:\n{p.stdout}"


def test_kill9_after_250_then_delivered(gateway):
    """Directory route: every acknowledged message reaches the mailbox after a
    kill -9 and restart (at least once)."""
    gw = gateway()
    markers, ids = [], []
    c = gw.client()
    c.ehlo()
    for _ in range(5):
        msg, marker = make_message()
        ids.append(queued_id(c.transaction(SENDER, [RCPT], msg)))
        markers.append(marker)
    gw.kill9()
    c.close()
    gw.start()
    for m in markers:
        gw.wait_for_marker(m)
    wait_for(lambda: not gw.queue_ids() and not gw.msg_files(), scaled(10),
             what="queue empty after delivery")


def test_kill9_mid_data_leaves_nothing_after_restart(gateway):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(b"Subject: half\r\n\r\n" + b"x" * 70000 + b"\r\n")
        assert c.pending() == b""
        gw.kill9()
    gw.start()
    assert not gw.incoming_files(), f"incoming/ not wiped at start-up: {gw.incoming_files()}"
    assert not gw.queue_ids() and not gw.msg_files()
    assert not gw.mailbox_files()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_vanishes_mid_data(gateway, how):
    gw = gateway()
    c = gw.client()
    c.ehlo()
    assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
    assert_reply(c.cmd("DATA"), 354)
    half, marker = make_message(body="y" * 60 + "\r\n")
    c.send(half * 500)          # ~100 KB, no end of data
    time.sleep(0.1)
    if how == "rst":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    wait_for(lambda: not gw.incoming_files(), scaled(5),
             what="the spool file of the vanished client removed")
    # a later message goes through; then nothing else is there
    good, gm = make_message()
    gw.send(SENDER, [RCPT], good)
    gw.wait_for_marker(gm)
    wait_for(lambda: not gw.queue_ids() and not gw.msg_files(), scaled(10), what="queue empty")
    assert len(gw.mailbox_files()) == 1, gw.mailbox_files()
    assert not gw.find_in_mailbox(marker)
    assert not gw.incoming_files()


# ---------------------------------------------------------------- timeouts

def test_command_timeout_closes_idle_client(gateway):
    gw = gateway({"limits": {"command_timeout": "2s"}})
    with gw.client() as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply(timeout=scaled(10))
        took = time.monotonic() - t0
        assert_reply(r, 421, "4.4.2")
        assert took >= 1.5, f"timed out after {took:.1f}s with command_timeout = 2s"
        c.wait_closed(scaled(5))
    with gw.client() as c:          # before any command, too
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 421, "4.4.2")
        c.wait_closed(scaled(5))


def test_data_timeout_closes_and_leaves_nothing(gateway):
    gw = gateway({"limits": {"data_timeout": "2s"}})
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(b"Subject: slow\r\n\r\npartial line")
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 421, "4.4.2")
        c.wait_closed(scaled(5))
    wait_for(lambda: not gw.incoming_files(), scaled(5), what="incoming/ empty")
    assert not gw.queue_ids()


def test_slow_but_active_client_not_cut(gateway):
    """command_timeout is per command: a client that keeps talking stays."""
    gw = gateway({"limits": {"command_timeout": "2s"}})
    with gw.client() as c:
        c.ehlo()
        for _ in range(4):
            time.sleep(0.8)
            assert_reply(c.cmd("NOOP"), 250)


def test_oversize_leaves_nothing(gateway):
    gw = gateway({"limits": {"message_size_limit": "16K"}})
    big, marker = make_message(body=("z" * 98 + "\r\n") * 1000)    # ~100 KB
    with RawClient(gw.port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(big + b".\r\n")
        assert_reply(c.reply(), 552, "5.3.4")
        assert_reply(c.cmd("NOOP"), 250)
    wait_for(lambda: not gw.incoming_files(), scaled(5), what="incoming/ empty")
    assert not gw.queue_ids() and not gw.msg_files()
    assert not gw.mailbox_files()
