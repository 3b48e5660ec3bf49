"""Issue 7, lifecycle: reload (SIGHUP and `mxgate reload`) with a good and a
bad config - listeners added and removed, the TLS certificate re-read, a
session open across the reload keeps working, a bad file is reported line by
line and changes nothing - and SIGTERM: stop accepting, let a session in the
middle of DATA finish and get its 250, exit 0, lose nothing acknowledged."""

import os
import shutil
import signal
import socket
import ssl

from mxtest import (RawClient, assert_reply, client_tls_context, free_port, make_message,
                    make_test_ca, pid_listens_on, queued_id, scaled, wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def reload_count(gw, word):
    return gw.log_text().count(word)


def test_reload_adds_and_removes_listeners_keeps_sessions(gateway):
    gw = gateway()
    port1 = gw.port
    # A session opened before the reload, left inside a transaction.
    old = gw.client()
    old.ehlo()
    assert_reply(old.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    assert_reply(old.cmd(f"RCPT TO:<{RCPT}>"), 250)

    port2 = free_port()
    gw.set_extra({"server": {"listen": f"127.0.0.1:{port1}, 127.0.0.1:{port2}",
                             "banner_text": "after-reload"}})
    n = reload_count(gw, "- reloaded config")
    p = gw.cli("reload")
    assert p.returncode == 0, p.stdout + p.stderr
    wait_for(lambda: reload_count(gw, "- reloaded config") > n, scaled(5), what="reloaded")
    wait_for(lambda: pid_listens_on(gw.proc.pid, port2), scaled(5), what="new listener")
    with RawClient(port2) as c:
        assert c.banner.code == 220 and "after-reload" in c.banner.text, str(c.banner)
    with gw.client() as c:   # the old listener serves the new config too
        assert "after-reload" in c.banner.text, str(c.banner)

    # Remove the first listener: it closes, the second keeps serving.
    gw.set_extra({"server": {"listen": f"127.0.0.1:{port2}"}})
    n = reload_count(gw, "- reloaded config")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reload_count(gw, "- reloaded config") > n, scaled(5), what="reloaded")
    wait_for(lambda: not pid_listens_on(gw.proc.pid, port1), scaled(5),
             what="old listener closed")
    with RawClient(port2) as c:
        assert c.banner.code == 220

    # The session from before both reloads finishes its transaction.
    data, marker = make_message()
    assert_reply(old.cmd("DATA"), 354)
    old.send(data + b".\r\n")
    qid = queued_id(old.reply())
    old.cmd("QUIT")
    old.close()
    gw.wait_for_marker(marker)
    assert qid
    # put the harness' port back so teardown/probe logic stays simple
    gw.port = port2


def test_reload_bad_config_keeps_running(gateway):
    gw = gateway({"server": {"banner_text": "first-config"}})
    good = gw.config_path.read_text()
    bad = good + "\n[limits]\nmax_recipients = lots\nno_such_directive = 1\n[nosuchsection]\n"
    gw.config_path.write_text(bad)
    # `mxgate reload` reaches the daemon, which checks the file, keeps the
    # old config and answers with the problems as FILE:LINE (exit 2)
    p = gw.cli("reload")
    assert p.returncode == 2, p
    assert f"{gw.config_path}:" in p.stderr and "no_such_directive" in p.stderr, p.stderr
    n = reload_count(gw, "reload refused")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reload_count(gw, "reload refused") > n, scaled(5), what="reload refused")
    log = gw.log_text()
    # every problem, as FILE:LINE: message
    path = str(gw.config_path)
    assert f"{path}:" in log
    assert "max_recipients" in log and "no_such_directive" in log, gw.log_tail(20)
    assert "nosuchsection" in log, gw.log_tail(20)
    assert gw.is_running()
    with gw.client() as c:
        assert "first-config" in c.banner.text
    data, marker = make_message()
    gw.send(SENDER, [RCPT], data)
    gw.wait_for_marker(marker)

    # A config that parses but cannot be applied (port already taken): refused too.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        gw.config_path.write_text(good.replace(f"listen = 127.0.0.1:{gw.port}",
                                               f"listen = 127.0.0.1:{gw.port}, 127.0.0.1:{busy}")
                                  .replace("first-config", "second-config"))
        n = reload_count(gw, "reload refused")
        p = gw.cli("reload")
        assert p.returncode != 0
        wait_for(lambda: reload_count(gw, "reload refused") > n, scaled(5), what="refused")
    with gw.client() as c:
        assert "first-config" in c.banner.text
    gw.config_path.write_text(good)
    status = gw.cli("status", check=True).stdout
    assert "reloads: ok 0, failed 3" in status, status   # CLI, SIGHUP, port taken


def test_reload_rereads_tls_certificate(gateway, workdir):
    ca1 = make_test_ca(workdir / "ca1")
    ca2 = make_test_ca(workdir / "ca2")
    live = workdir / "live"
    live.mkdir()
    chain, key = live / "chain.pem", live / "key.pem"
    shutil.copy(ca1.chain, chain)
    shutil.copy(ca1.key, key)
    gw = gateway({"tls": {"cert_file": str(chain), "key_file": str(key)}})

    def peer_cert_verifies_with(ca):
        with gw.client() as c:
            c.ehlo()
            c.starttls(client_tls_context(ca_file=ca.ca_cert), gw.hostname)
            r = c.ehlo()
            return r.code == 250

    assert peer_cert_verifies_with(ca1)
    # Sessions already in TLS keep their context; new ones get the new cert.
    held = gw.client()
    held.ehlo()
    held.starttls(client_tls_context(ca_file=ca1.ca_cert), gw.hostname)
    held.ehlo()
    shutil.copy(ca2.chain, chain)
    shutil.copy(ca2.key, key)
    os.chmod(key, 0o600)
    n = reload_count(gw, "- reloaded config")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reload_count(gw, "- reloaded config") > n, scaled(5), what="reloaded")
    assert peer_cert_verifies_with(ca2)
    try:
        peer_cert_verifies_with(ca1)
        raise AssertionError("the old certificate is still served after reload")
    except ssl.SSLError:
        pass
    data, marker = make_message()
    r = held.transaction(SENDER, [RCPT], data)
    assert queued_id(r)
    held.close()
    gw.wait_for_marker(marker)


def test_sigterm_drains_session_in_data(gateway):
    gw = gateway()
    port = gw.port
    busy = gw.client()
    busy.ehlo()
    assert_reply(busy.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    assert_reply(busy.cmd(f"RCPT TO:<{RCPT}>"), 250)
    assert_reply(busy.cmd("DATA"), 354)
    data, marker = make_message(body="first half\r\n")
    busy.send(data[:-2])            # mid-message
    idle = gw.client()
    idle.ehlo()

    gw.proc.send_signal(signal.SIGTERM)
    gw.wait_log(r"signal 15: stopping", scaled(5))
    # the idle session is told to go away (RFC 5321 3.8: 421), no new ones accepted
    r = idle.reply(timeout=scaled(5))
    assert_reply(r, 421)
    idle.close()
    wait_for(lambda: not pid_listens_on(gw.proc.pid, port), scaled(5), what="listener closed")
    assert gw.is_running(), "exited before the session in DATA finished"
    # The session in DATA finishes and its message is acknowledged.
    busy.send(b"\r\nsecond half\r\n.\r\n")
    qid = queued_id(busy.reply(timeout=scaled(10)))
    # then the session is closed: 421 (shutting down) or plain EOF
    busy.wait_closed(scaled(5))
    busy.close()
    rc = gw.proc.wait(scaled(20))
    assert rc == 0, gw.log_tail(30)
    gw.proc = None
    assert "- mxgate stopped" in gw.log_text()
    # Nothing acknowledged is lost: it was delivered before exit or is still queued.
    if not gw.find_in_mailbox(marker):
        assert qid in gw.queue_ids(), f"{qid} neither delivered nor queued"
        gw.start()
        gw.wait_for_marker(marker)


def test_sigterm_lets_delivery_in_flight_finish(gateway):
    """SIGTERM while the downstream is still answering the final dot: mxgate
    waits for the reply, records it, and exits 0; the message is delivered
    once and is no longer queued."""
    from downstream import Downstream, relay_extra
    ds = Downstream().start()
    try:
        ds.data_delay = 1.5
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"]))
        data, marker = make_message()
        qid = gw.send(SENDER, [RCPT], data)
        wait_for(lambda: "data" in ds.events, scaled(10), what="delivery in DATA")
        gw.proc.send_signal(signal.SIGTERM)
        rc = gw.proc.wait(scaled(20))
        gw.proc = None
        assert rc == 0, gw.log_tail(30)
        assert len(ds.find(marker)) == 1, "delivered once before exit"
        assert qid not in gw.queue_ids(), "delivered but still queued"
        assert "deliveries still in flight" not in gw.log_text()
    finally:
        ds.stop()
