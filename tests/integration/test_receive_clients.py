"""Real SMTP clients against the receiving side: Python smtplib, swaks
(plain and pipelined), Postfix's smtp-source (parallel sessions)."""

import email.message
import smtplib
import subprocess
import uuid

import pytest

from mxtest import header_values, parse_received, scaled, wait_for

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
HELO = "client.example.net"


def test_smtplib_send_message(gateway):
    gw = gateway()
    mark = uuid.uuid4().hex
    m = email.message.EmailMessage()
    m["From"] = SENDER
    m["To"] = RCPT
    m["Subject"] = "smtplib " + mark
    m.set_content("hello from smtplib\n.\nwith a dot line\n")
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname=HELO, timeout=scaled(10)) as s:
        s.ehlo()
        assert s.does_esmtp and s.has_extn("pipelining") and s.has_extn("size")
        refused = s.send_message(m)
        assert refused == {}
        code, text = s.noop()
        assert code == 250
    eml = gw.wait_for_marker(mark)
    assert b"\r\n.\r\nwith a dot line\r\n" in eml
    rcv = parse_received(header_values(eml, "Received")[0])
    assert rcv["with_"] == "ESMTP" and rcv["for_"] == f"<{RCPT}>"


def test_smtplib_refusals(gateway):
    gw = gateway()
    mark = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname=HELO, timeout=scaled(10)) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as ei:
            s.sendmail(SENDER, ["someone@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
        code, text = ei.value.recipients["someone@elsewhere.test"]
        assert code == 550 and text.startswith(b"5.7.1"), (code, text)
        # partial refusal: the message goes to the accepted recipient
        refused = s.sendmail(SENDER, [RCPT, "x@elsewhere.test"],
                             f"Subject: partial {mark}\r\n\r\nx\r\n")
        assert list(refused) == ["x@elsewhere.test"] and refused["x@elsewhere.test"][0] == 550
    gw.wait_for_marker(f"partial {mark}")


def test_smtplib_smtputf8(gateway):
    gw = gateway()
    mark = uuid.uuid4().hex
    m = email.message.EmailMessage()
    m["From"] = "jörg@client.example.net"
    m["To"] = "üser@example.test"
    m["Subject"] = "utf8 " + mark
    m.set_content("Grüße\n")
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname=HELO, timeout=scaled(10)) as s:
        assert s.send_message(m) == {}   # smtplib adds SMTPUTF8 when needed
    eml = gw.wait_for_marker("utf8 " + mark)
    rcv = parse_received(header_values(eml, "Received")[0])
    assert rcv["with_"] == "UTF8SMTP" and rcv["for_"] == "<üser@example.test>"


@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_swaks(gateway, pipeline):
    gw = gateway()
    mark = uuid.uuid4().hex
    marker = f"swaks{int(pipeline)}{mark}"
    args = ["swaks", "--server", f"127.0.0.1:{gw.port}", "--ehlo", HELO, "--from", SENDER,
            "--to", RCPT, "--header", f"Subject: {marker}", "--body", "via swaks",
            "--timeout", "20"]
    if pipeline:
        args.append("--pipeline")
    p = subprocess.run(args, capture_output=True, text=True, timeout=scaled(60))
    assert p.returncode == 0, f"swaks failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    assert "250 2.0.0 Ok: queued as" in p.stdout
    gw.wait_for_marker(marker)


def test_swaks_relay_refused(gateway):
    gw = gateway()
    p = subprocess.run(["swaks", "--server", f"127.0.0.1:{gw.port}", "--ehlo", HELO,
                        "--from", SENDER, "--to", "someone@elsewhere.test", "--timeout", "20"],
                       capture_output=True, text=True, timeout=scaled(60))
    assert p.returncode != 0
    assert "550 5.7.1" in p.stdout, p.stdout


@pytest.mark.parametrize("extra", [[], ["-d"]], ids=["conn-per-msg", "reuse-conn"])
def test_smtp_source_parallel(gateway, extra):
    gw = gateway()
    p = subprocess.run(["smtp-source", "-s", "5", "-m", "20", *extra, "-M", HELO,
                        "-f", "a@b.test", "-t", RCPT, f"127.0.0.1:{gw.port}"],
                       capture_output=True, text=True, timeout=scaled(60))
    assert p.returncode == 0, f"smtp-source failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    msgs = gw.wait_for_mailbox(20)
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue empty")
    msgs = gw.mailbox_messages()
    assert len(msgs) == 20, f"{len(msgs)} messages delivered, 20 sent"
    ids = set()
    for eml in msgs:
        rcv = parse_received(header_values(eml, "Received")[0])
        assert rcv and rcv["by"] == gw.hostname and rcv["for_"] == f"<{RCPT}>"
        ids.add(rcv["id"])
    assert len(ids) == 20, "queue ids are not unique"
