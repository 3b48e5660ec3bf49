"""Attachment policy (issue 13, part b): [attachments] through the real
binary - a blocked name or type is refused with 550 5.7.1 before anything
is queued, or quarantined; clean attachments and zips pass."""

import base64
import io
import re
import socket
import uuid
import zipfile

import pytest

import mxtest

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def att_gw(gateway, **kw):
    a = {"enabled": "yes"}
    a.update({k: str(v) for k, v in kw.items()})
    return gateway({"attachments": a})


def message(att_headers, payload):
    marker = "m" + uuid.uuid4().hex[:16]
    text = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: files {marker}\r\n"
            f"Message-ID: <{marker}@client.example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            + "\r\n".join(att_headers) + "\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return text.encode() + b64 + b"--b--\r\n", marker


def zipped(entries):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in entries:
            z.writestr(n, d)
    return b.getvalue()


def send(gw, data):
    with gw.client() as c:
        c.ehlo()
        return c.transaction(SENDER, [RCPT], data, expect_queued=False)


BLOCKED = [
    (["Content-Type: application/pdf",
      "Content-Disposition: attachment; filename=\"invoice.pdf.exe\""], b"whatever",
     "name=invoice.pdf.exe"),
    (["Content-Type: application/octet-stream",
      "Content-Disposition: attachment; filename*=UTF-8''Rechnung%E2%80%93M%C3%A4rz.js"],
     b"var x", "name=Rechnung???M??rz.js"),
    (["Content-Type: application/octet-stream; name=\"=?UTF-8?Q?facture=2Escr?=\""], b"x",
     "name=facture.scr"),
    (["Content-Type: application/pdf", "Content-Disposition: attachment; filename=report.pdf"],
     b"MZ\x90\x00\x03\x00\x00\x00", "type=pe name=report.pdf"),
    (["Content-Type: application/zip", "Content-Disposition: attachment; filename=docs.zip"],
     zipped([("a.txt", b"hi"), ("setup.bat", b"echo")]), "zip=docs.zip entry=setup.bat"),
    (["Content-Type: application/zip", "Content-Disposition: attachment; filename=docs.zip"],
     zipped([("run.txt", b"#!/bin/sh\necho")]), "type=script zip=docs.zip entry=run.txt"),
]


def test_blocked_attachments_rejected_before_queueing(gateway):
    gw = att_gw(gateway)
    for hdrs, payload, why in BLOCKED:
        data, marker = message(hdrs, payload)
        r = send(gw, data)
        mxtest.assert_reply(r, 550, "5.7.1")
        assert why in r.text, (why, r.text)
        gw.wait_log(r"attachment_check result=blocked " + why.replace("?", r"\?") + " action=reject")
    assert not gw.queue_files() and not gw.msg_files()


def test_clean_attachments_delivered(gateway):
    gw = att_gw(gateway)
    for hdrs, payload in [
        (["Content-Type: application/pdf", "Content-Disposition: attachment; filename=a.pdf"],
         b"%PDF-1.4 hello"),
        (["Content-Type: application/zip", "Content-Disposition: attachment; filename=z.zip"],
         zipped([("a.txt", b"hi"), ("b.pdf", b"%PDF")])),
        # one level deep: an executable inside a zip inside the zip is clamd's business
        (["Content-Type: application/zip", "Content-Disposition: attachment; filename=o.zip"],
         zipped([("inner.zip", zipped([("x.exe", b"MZ")]))])),
    ]:
        data, marker = message(hdrs, payload)
        r = send(gw, data)
        mxtest.assert_reply(r, 250)
        raw = gw.wait_for_marker(marker)
        assert raw.endswith(data.split(b"\r\n\r\n", 1)[1])  # body as sent
    gw.wait_log(r"attachment_check result=clean")


def test_quarantine_action_quarantines_the_message(gateway):
    gw = att_gw(gateway, action="quarantine", blocked_types="elf")
    data, marker = message(["Content-Type: application/octet-stream",
                            "Content-Disposition: attachment; filename=tool"],
                           b"\x7fELF\x02\x01\x01\x00")
    r = send(gw, data)
    mxtest.assert_reply(r, 250)
    qid = mxtest.queued_id(r)
    gw.wait_log(r"attachment_check result=blocked type=elf name=tool action=quarantine")
    gw.wait_log(r"quarantined reason=attachment")
    env = (gw.queue_dir / "quarantine" / qid).read_text()
    assert "\nquarantine-reason: attachment\nquarantine-verdict: type=elf name=tool" in env, env
    assert not gw.find_in_mailbox(marker)


def test_off_by_default(gateway):
    gw = gateway()
    data, marker = message(["Content-Type: application/octet-stream",
                            "Content-Disposition: attachment; filename=a.exe"], b"MZ")
    mxtest.assert_reply(send(gw, data), 250)
    gw.wait_for_marker(marker)


EXE = (["Content-Type: application/pdf",
        "Content-Disposition: attachment; filename=\"invoice.pdf.exe\""], b"whatever")


@pytest.mark.parametrize("action", ["tag", "deliver"])
def test_blocked_attachment_tag_or_deliver(gateway, action):
    """tag: delivered with the verdict header and "[SPAM]" on the Subject
    ([rspamd] subject_tag, no rspamd needed); deliver: the header only.  A
    sender's own X-Mxgate-Attachments never gets through."""
    gw = att_gw(gateway, action=action)
    data, marker = message(*EXE)
    data = b"X-Mxgate-Attachments: clean; forged\r\n" + data
    r = send(gw, data)
    mxtest.assert_reply(r, 250)
    gw.wait_log(r"attachment_check result=blocked name=invoice.pdf.exe action=" + action)
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "X-Mxgate-Attachments") == [
        'blocked; verdict="name=invoice.pdf.exe"; by=mx.example.test']
    subj = mxtest.header_values(msg, "Subject")
    assert subj == ([f"[SPAM] files {marker}"] if action == "tag" else [f"files {marker}"]), subj
    # tag is one of mxgate's own verdicts: flagged (no policy fields here:
    # SPF, DKIM and DMARC are off)
    assert mxtest.header_values(msg, "X-Spam-Flag") == (["YES"] if action == "tag" else [])
    assert msg.endswith(data.split(b"\r\n\r\n", 1)[1])  # body as sent


def no_boundary():
    """MIME GMime reads only by guessing: a multipart without a boundary
    (GMime sees one text body; a reader that guesses "--b" shows an .exe)."""
    marker = "m" + uuid.uuid4().hex[:16]
    return (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: guess {marker}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--b\r\n"
            "Content-Type: application/octet-stream; name=a.exe\r\n\r\nMZ\r\n"
            "--b--\r\n").encode(), marker


def test_unparsable_mime_is_never_a_silent_pass(gateway):
    """Default: delivered, with a header saying the attachments were not
    checked and why (it used to pass as clean, or with a log line only)."""
    gw = att_gw(gateway)
    data, marker = no_boundary()
    mxtest.assert_reply(send(gw, data), 250)
    gw.wait_log(r"attachment_check result=unchecked reason=unparsable "
                r"mime=multipart_without_boundary action=deliver")
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "X-Mxgate-Attachments") == [
        "unchecked; reason=unparsable; mime=multipart_without_boundary; by=mx.example.test"]


@pytest.mark.parametrize("action", ["reject", "tag"])
def test_unparsable_mime_action(gateway, action):
    gw = att_gw(gateway, unparsable_action=action)
    data, marker = no_boundary()
    r = send(gw, data)
    if action == "reject":
        mxtest.assert_reply(r, 550, "5.7.1")
        assert "cannot be parsed" in r.text, r.text
        gw.wait_log(r"reject reason=attachment_unparsable")
        assert not gw.queue_files()
        return
    mxtest.assert_reply(r, 250)
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "Subject") == [f"[SPAM] guess {marker}"]


def padded_exe(pad=2000):
    """A blocked .exe behind pad bytes of text: over a small max_size."""
    data, marker = message(*EXE)
    return data.replace(b"see attached", (b"x" * 76 + b"\r\n") * (pad // 78)), marker


def test_too_large_to_judge_is_said_in_a_header(gateway):
    """max_size below message_size_limit, oversize_action not set: it
    follows unparsable_action (deliver), with the header - and check-config
    says out loud that larger messages pass unjudged."""
    gw = att_gw(gateway, max_size="1K")
    data, marker = padded_exe()
    mxtest.assert_reply(send(gw, data), 250)
    gw.wait_log(r"attachment_check result=unchecked reason=size size=\d+ max_size=1024 "
                r"action=deliver")
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "X-Mxgate-Attachments") == [
        "unchecked; reason=size; by=mx.example.test"]
    err = gw.cli("check-config").stderr
    assert ("[attachments] max_size (1024) is below [limits] message_size_limit"
            in err), err


@pytest.mark.parametrize("action", ["reject", "quarantine", "tag"])
def test_oversize_action(gateway, action):
    """Red team: a blocked .exe padded past max_size was delivered (no
    action applied to a message too large to judge).  oversize_action acts
    like unparsable_action, and by default follows it."""
    kw = {"oversize_action": action} if action != "tag" else {"unparsable_action": "tag"}
    gw = att_gw(gateway, max_size="1K", **kw)
    data, marker = padded_exe()
    r = send(gw, data)
    gw.wait_log(r"attachment_check result=unchecked reason=size .* action=" + action)
    if action == "reject":
        mxtest.assert_reply(r, 550, "5.7.1")
        assert "too large for its attachments to be checked" in r.text, r.text
        gw.wait_log(r"reject reason=attachment_oversize")
        assert not gw.queue_files() and not gw.find_in_mailbox(marker)
        return
    mxtest.assert_reply(r, 250)
    if action == "quarantine":
        qid = mxtest.queued_id(r)
        gw.wait_log(r"quarantined reason=attachment id=" + qid)
        env = (gw.queue_dir / "quarantine" / qid).read_text()
        assert "\nquarantine-verdict: size\n" in env, env
        assert not gw.find_in_mailbox(marker)
        return
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "Subject") == [f"[SPAM] files {marker}"]
    assert mxtest.header_values(msg, "X-Mxgate-Attachments") == [
        "unchecked; reason=size; by=mx.example.test"]


def test_every_acceptable_message_is_judged_by_default(gateway):
    """max_size not set: it is [limits] message_size_limit, so a message
    the gateway accepts at all is judged however it is padded (the old
    fixed 25M left 25M..35M unjudged under the default 35M limit)."""
    gw = gateway({"attachments": {"enabled": "yes"},
                  "limits": {"message_size_limit": "64K"}})
    data, marker = padded_exe(60_000)
    assert 60_000 < len(data) < 64 * 1024
    r = send(gw, data)
    mxtest.assert_reply(r, 550, "5.7.1")
    assert "name=invoice.pdf.exe" in r.text, r.text
    assert "is below [limits] message_size_limit" not in gw.cli("check-config").stderr


# -- memory (red team 2): nested encoded messages, clients that leave

def hwm_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def qp_chain(size, levels):
    """An attached message sent quoted-printable (plain ASCII is its own
    QP), nested levels deep: each level decodes to nearly the whole
    message, so a worker holding every level at once needs levels times
    the message (68x before the fix)."""
    marker = "m" + uuid.uuid4().hex[:16]
    line = "a" * 70 + "\r\n"
    m = ("Subject: x\r\n\r\n" + line * ((size - 16 * 1024) // len(line))).encode()
    for _ in range(levels):
        m = (b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n"
             b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + m)
    head = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: nest {marker}\r\n"
            f"Message-ID: <{marker}@client.example.net>\r\n").encode()
    return head + m, marker


LIMIT = 3 * 1024 * 1024  # over the 1 MiB floor of the decode budget


def test_nested_encoded_messages_bound_worker_memory(gateway):
    """docs/security.md "Memory": a check holds at most 4 times the message
    plus 1 MiB; decoded attached messages past 2 times the message plus
    1 MiB are blocked (before: every level held twice, 68x)."""
    gw = gateway({"attachments": {"enabled": "yes"},
                  "limits": {"message_size_limit": str(LIMIT)}})
    base = hwm_kb(gw.proc.pid)
    data, _ = qp_chain(LIMIT, 31)  # within MAX_DEPTH: only the budget stops it
    r = send(gw, data)
    grown = (hwm_kb(gw.proc.pid) - base) * 1024
    print(f"peak grew {grown / len(data):.1f}x the message")
    assert grown < 4 * len(data) + (8 << 20), f"{grown >> 20} MiB for {len(data) >> 20} MiB"
    mxtest.assert_reply(r, 550, "5.7.1")
    assert "decoded=over_limit" in r.text, r.text


def send_and_leave(port, data):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO x\r\n")
    while f.readline()[3:4] == b"-":
        pass
    s.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
    for _ in range(3):
        f.readline()
    s.sendall(data + b".\r\n")
    s.close()  # gone: no reply read


def test_jobs_of_clients_gone_are_called_off(gateway):
    """A client that leaves right after its dot: its check is taken back
    from the queue or stopped at its next part (before: run in full for
    nobody, each at 68x the message).  Chains of 2 levels: within the
    budget, so only the call-off keeps a job from finishing."""
    gw = gateway({"attachments": {"enabled": "yes"},
                  "server": {"content_workers": "1"},
                  "limits": {"message_size_limit": str(LIMIT)}})
    data, _ = qp_chain(LIMIT, 2)
    for _ in range(4):
        send_and_leave(gw.port, data)
    gw.wait_log(r"(attachment_check note=client_gone[\s\S]*){4}", mxtest.scaled(30))
    works = re.findall(r"attachment_check note=client_gone work=(\w+)", gw.log_text())
    print("jobs:", works)
    assert len(works) == 4, works
    assert "none" in works or "stopped" in works, works
    assert "attachment_check result=" not in gw.log_text()
