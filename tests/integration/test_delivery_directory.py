"""Routes of type directory: every message becomes ID.eml, complete
(Return-Path, Delivered-To, our trace headers, the message byte for byte),
written atomically (no temporary file is ever left or seen), also for a
message larger than one write buffer.
"""

import mxtest
from mxtest import make_message, scaled, wait_for

SENDER = "sender@example.test"


def test_directory_route_writes_complete_files(gateway):
    gw = gateway({"queue": {"retry_schedule": "1s"}})
    big_body = "".join(f"line {i:06d} " + "x" * 70 + "\r\n" for i in range(20000))  # ~1.6 MB
    sent = []
    for i, body in enumerate(["hello\r\n", ".dot first\r\n", big_body]):
        data, marker = make_message(sender=SENDER, body=body)
        qid = gw.send(SENDER, [f"u{i}@example.test", "all@example.test"], data)
        sent.append((qid, data))
    for qid, data in sent:
        path = gw.mailbox_dir / f"{qid}.eml"
        wait_for(path.exists, scaled(10), what=f"{path}")
        raw = path.read_bytes()
        head = f"Return-Path: <{SENDER}>\r\n".encode()
        assert raw.startswith(head), raw[:200]
        assert b"Delivered-To: all@example.test\r\n" in raw
        assert raw.endswith(data)
        assert b"\r\nReceived: from client.example.net" in raw
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
    names = sorted(p.name for p in gw.mailbox_dir.iterdir())
    assert names == sorted(f"{q}.eml" for q, _ in sent), names   # no .tmp left over
    assert "status=sent (250 2.0.0 written to" in gw.log_text()


def test_directory_unwritable_defers(gateway, workdir):
    target = workdir / "readonly"
    target.mkdir()
    target.chmod(0o500)
    gw = gateway({"route default": {"directory": str(target / "sub")},
                  "queue": {"retry_schedule": "1s"}})
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    import os
    if os.getuid() == 0:   # root ignores the mode: nothing to see
        wait_for(lambda: (target / "sub" / f"{qid}.eml").exists(), scaled(10), what="file")
        return
    gw.wait_log(qid + r" to=<a@example.test> .*status=deferred \(4\.3\.0 ")
    target.chmod(0o700)
    wait_for(lambda: (target / "sub" / f"{qid}.eml").exists(), scaled(10), what="file on retry")
