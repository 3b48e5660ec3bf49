"""Delivery to a downstream SMTP server (route type smtp): plain relay with
connection reuse and dot-stuffing, failover, per-recipient 4xx/5xx outcomes,
DSNs (RFC 3464) for bounces and expiry, never a bounce to the null sender,
partial delivery, 8BITMIME refusal, hangs and dropped connections, PIPELINING
against Postfix's smtp-sink.  TLS cases are in test_delivery_tls.py, the
queue CLI in test_delivery_cli.py, crashes in test_delivery_crash.py.

The downstream is tests/integration/downstream.py (aiosmtpd in a thread).
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import mxtest
from downstream import Downstream, dsn_parts, dsns, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "sender@example.test"


@pytest.fixture
def ds():
    d = Downstream().start()
    yield d
    d.stop()


def test_relay_reuse_and_dot_stuffing(gateway, ds):
    # one connection for the route: later messages must reuse it (RSET)
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], route={"max_connections": "1"}))
    body = ".leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\nend\r\n"
    sent = []
    for i in range(3):
        data, marker = make_message(body=body, sender=SENDER)
        gw.send(SENDER, [f"u{i}@example.test"], data)
        sent.append((data, marker))
    ds.wait_messages(3)
    for data, marker in sent:
        [rec] = ds.find(marker)
        assert rec.mail_from == SENDER
        # the downstream sees our trace headers, then the message unchanged
        assert rec.data.endswith(data), rec.data[-300:]
        assert b"\r\n.leading dot\r\n..two dots\r\n" in rec.data
        assert rec.data.startswith(b"Received: ")
        assert not rec.tls
    log = gw.log_text()
    assert "status=sent (250 2.0.0 OK queued)" in log
    # one connection carried several messages: RSET between them
    assert "send=(RSET)" in log
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")


def test_failover_to_second_host(gateway, ds):
    down = mxtest.closed_port()
    gw = gateway(relay_extra([f"127.0.0.1:{down}", f"127.0.0.1:{ds.port}"]))
    data, marker = make_message(sender=SENDER)
    gw.send(SENDER, ["a@example.test"], data)
    wait_for(lambda: ds.find(marker), scaled(10), what="delivery through the second host")
    assert f"status=failover" in gw.log_text()
    assert f"relay=127.0.0.1[127.0.0.1]:{ds.port}" in gw.log_text()


def test_4xx_then_success_on_retry(gateway, ds):
    ds.rcpt_replies["a@example.test"] = ["451 4.3.0 try again later"]
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"]))
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    gw.wait_log(qid + r" .*status=deferred")
    wait_for(lambda: ds.find(marker), scaled(10), what="delivery on retry")
    assert [r for a, r in ds.rcpt_log if a == "a@example.test"] == [
        "451 4.3.0 try again later", "250"]
    assert len(ds.find(marker)) == 1
    assert not dsns(ds)
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")


def bounces_to_ds(gw):
    """The sender domain's MX (implicit: its A record) is the test downstream,
    so DSNs sent through the outbound route (type mx) arrive there too."""
    gw.dns.add("example.test", "A", "127.0.0.1")


def test_5xx_bounces_with_dsn(gateway, ds):
    ds.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user here"]
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], bounce_port=ds.port))
    bounces_to_ds(gw)
    data, marker = make_message(sender=SENDER, to="nobody@example.test")
    qid = gw.send(SENDER, ["nobody@example.test"], data)
    wait_for(lambda: dsns(ds), scaled(10), what="the DSN")
    [rec] = dsns(ds)
    assert rec.rcpt_tos == [SENDER]
    msg, per_msg, per_rcpt = dsn_parts(rec)
    assert per_msg["reporting-mta"] == f"dns; {gw.hostname}"
    assert "arrival-date" in per_msg
    [r] = per_rcpt
    assert r["final-recipient"] == "rfc822; nobody@example.test"
    assert r["action"] == "failed"
    assert r["status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in r["diagnostic-code"]
    assert r["diagnostic-code"].startswith("smtp;")
    headers = msg.get_payload()[2].get_payload()
    assert marker in headers and "hello" not in headers
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["To"] == f"<{SENDER}>"
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
    assert qid + " to=<nobody@example.test>" in gw.log_text()


def test_expiry_bounces_with_dsn(gateway, ds):
    ds.rcpt_replies["slow@example.test"] = ["451 4.3.0 busy"] * 100
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], queue={"max_lifetime": "4s"},
                             bounce_port=ds.port))
    bounces_to_ds(gw)
    data, marker = make_message(sender=SENDER, to="slow@example.test")
    qid = gw.send(SENDER, ["slow@example.test"], data)
    wait_for(lambda: dsns(ds), scaled(15), what="the expiry DSN")
    [rec] = dsns(ds)
    _, _, [r] = dsn_parts(rec)
    assert r["action"] == "failed"
    assert r["status"] == "4.4.7"
    assert "451 4.3.0 busy" in r["diagnostic-code"]
    assert "expired" in r["diagnostic-code"]
    attempts = [a for a, _ in ds.rcpt_log if a == "slow@example.test"]
    assert len(attempts) >= 2
    assert f"{qid} to=<slow@example.test> status=expired" in gw.log_text()
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")


def test_null_sender_is_never_bounced(gateway, ds):
    ds.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user"]
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], bounce_port=ds.port))
    bounces_to_ds(gw)
    data, marker = make_message(sender="MAILER-DAEMON@client.example.net")
    qid = gw.send("", ["nobody@example.test"], data)
    gw.wait_log(qid + r" to=<nobody@example.test> status=bounced dsn=no-null-sender")
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
    time.sleep(0.5)   # a DSN would have been injected before the removal
    assert not dsns(ds)
    assert not ds.messages


def test_partial_failure_multi_recipient(gateway, ds):
    ds.rcpt_replies["bad@example.test"] = ["550 5.1.1 unknown"]
    ds.rcpt_replies["later@example.test"] = ["452 4.2.2 mailbox full"]
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], bounce_port=ds.port))
    bounces_to_ds(gw)
    data, marker = make_message(sender=SENDER)
    rcpts = ["ok@example.test", "bad@example.test", "later@example.test"]
    gw.send(SENDER, rcpts, data)
    def relayed():
        return [r.rcpt_tos for r in ds.find(marker) if r.mail_from not in ("", "<>")]
    wait_for(lambda: len(relayed()) >= 2 and dsns(ds), scaled(15),
             what="both deliveries and the DSN")
    got = relayed()
    assert got == [["ok@example.test"], ["later@example.test"]]   # ok never re-sent
    [rec] = dsns(ds)
    _, _, per_rcpt = dsn_parts(rec)
    assert [r["final-recipient"] for r in per_rcpt] == ["rfc822; bad@example.test"]
    assert per_rcpt[0]["status"] == "5.1.1"
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")


def test_8bit_message_needs_8bitmime(gateway, ds):
    ds.offer_8bitmime = False
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], bounce_port=ds.port))
    bounces_to_ds(gw)
    data, marker = make_message(sender=SENDER, body="gr\u00fc\u00dfe\r\n".encode().decode("latin-1"))
    data = data.decode("latin-1").encode("latin-1")
    qid = gw.send(SENDER, ["a@example.test"], data, mail_params="BODY=8BITMIME")
    wait_for(lambda: dsns(ds), scaled(10), what="the DSN")
    _, _, [r] = dsn_parts(dsns(ds)[0])
    assert r["status"] == "5.6.3"
    assert "8BITMIME" in r["diagnostic-code"]
    assert not [r for r in ds.find(marker) if r.mail_from not in ("", "<>")]   # never downgraded


def test_hang_in_data_times_out_then_delivers(gateway, ds):
    ds.hang_in_data = True
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], route={"data_timeout": "2s"}))
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    gw.wait_log(qid + r" to=<a@example.test> .*status=deferred .*timeout", scaled(10))
    ds.hang_in_data = False
    wait_for(lambda: ds.find(marker), scaled(10), what="delivery after the hang")


@pytest.mark.parametrize("where", ["mail", "rcpt", "data"])
def test_dropped_connection_is_retried(gateway, ds, where):
    ds.drop_at = where
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"]))
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    gw.wait_log(qid + r" to=<a@example.test> .*status=deferred", scaled(10))
    ds.drop_at = None
    wait_for(lambda: ds.find(marker), scaled(10), what="delivery after the drop")
    assert len(ds.find(marker)) == 1


@pytest.mark.skipif(not Path("/usr/sbin/smtp-sink").exists(), reason="no smtp-sink")
def test_pipelining_with_smtp_sink(gateway, workdir):
    port = mxtest.free_port()
    dump = Path(workdir) / "sink"
    dump.mkdir()
    os.chmod(dump, 0o777)
    args = ["/usr/sbin/smtp-sink", "-u", "nobody", "-d", str(dump) + "/%M.", "-R", str(dump),
            f"127.0.0.1:{port}", "10"]
    if os.getuid() != 0:
        args = [a for a in args if a not in ("-u", "nobody")]
    sink = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: not mxtest.port_is_free(port), scaled(5), what="smtp-sink listening")
        gw = gateway(relay_extra([f"127.0.0.1:{port}"]))
        markers = []
        for i in range(3):
            data, marker = make_message(sender=SENDER)
            gw.send(SENDER, [f"a{i}@example.test", f"b{i}@example.test"], data)
            markers.append(marker)

        def dumped():
            files = [p for p in dump.rglob("*") if p.is_file()]
            text = b"".join(p.read_bytes() for p in files)
            return all(m.encode() in text for m in markers) and text
        text = wait_for(dumped, scaled(10), what="messages in smtp-sink's dump")
        assert b"b2@example.test" in text
        wait_for(lambda: gw.log_text().count("status=sent") == 6, scaled(5),
                 what="six recipients logged as sent")
        # smtp-sink offers PIPELINING: MAIL, RCPT, RCPT and DATA go out before
        # the first reply (RFC 2920), i.e. no "reply=" between them in the log
        lines = [ln for ln in gw.log_text().splitlines() if "smtp-client" in ln]
        i = next(k for k, ln in enumerate(lines) if "send=(MAIL FROM" in ln)
        assert ["send=(RCPT" in lines[i + 1], "send=(RCPT" in lines[i + 2],
                "send=(DATA)" in lines[i + 3]] == [True, True, True], lines[i:i + 5]
    finally:
        sink.terminate()
        sink.wait(5)


def test_large_message_streamed_with_backpressure(gateway, ds):
    gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"]))
    body = "".join(("." if i % 7 == 0 else "") + f"line {i:07d} " + "y" * 60 + "\r\n"
                   for i in range(60000))   # ~4.5 MB, many lines starting with a dot
    data, marker = make_message(sender=SENDER, body=body)
    qid = gw.send(SENDER, ["big@example.test"], data)
    wait_for(lambda: ds.find(marker), scaled(30), what="the large message")
    [rec] = ds.find(marker)
    assert rec.data.endswith(data)
    gw.wait_log(qid + r" to=<big@example.test> .*status=sent")
