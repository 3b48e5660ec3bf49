"""Logs you can query (issue 16): the queued line carries the Message-ID;
session ids do not start again at 1 after a restart; SIGUSR1 and `mxgate
reopen-logs` reopen [log] file after logrotate moved it (no line lost)."""

import os
import re
import signal

from mxtest import make_message, scaled, wait_for

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def first_session_id(text):
    m = re.search(r"\bs=([0-9a-f]{16}) ", text)
    assert m, text[-2000:]
    return m.group(1)


def test_message_id_and_session_ids_across_restarts(gateway):
    gw = gateway()
    data, marker = make_message()
    qid = gw.send(SENDER, [RCPT], data)
    line = gw.wait_log(r"queued id=" + qid + r" .*")
    assert f" message_id=<{marker}@client.example.net> " in line.group(0), line.group(0)
    # a message without one says so
    raw = b"From: <a@client.example.net>\r\nSubject: no id\r\n\r\nbody\r\n"
    qid2 = gw.send(SENDER, [RCPT], raw)
    assert " message_id=- " in gw.wait_log(r"queued id=" + qid2 + r" .*").group(0)
    first = first_session_id(gw.log_text())
    assert int(first, 16) >> 32 > 0, first      # start time, not a counter from 1
    size = gw.log_path.stat().st_size
    gw.stop()
    gw.start()
    with gw.client() as c:
        c.ehlo()
    wait_for(lambda: re.search(r"\bs=[0-9a-f]{16} ", gw.log_text()[size:]), scaled(5),
             what="a session line after the restart")
    again = first_session_id(gw.log_text()[size:])
    assert again != first, (first, again)


def test_reopen_log_file_after_rotation(gateway, workdir):
    logfile = workdir / "mx.log"
    gw = gateway({"log": {"file": str(logfile), "level": "info"}})
    data, m1 = make_message()
    q1 = gw.send(SENDER, [RCPT], data)
    wait_for(lambda: logfile.exists() and q1 in logfile.read_text(), scaled(5),
             what="first message in the log file")
    rotated = workdir / "mx.log.1"
    os.rename(logfile, rotated)
    gw.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: logfile.exists() and "log file reopened" in logfile.read_text(),
             scaled(5), what="new log file after SIGUSR1")
    data, m2 = make_message()
    q2 = gw.send(SENDER, [RCPT], data)
    wait_for(lambda: q2 in logfile.read_text(), scaled(5), what="second message, new file")
    assert q2 not in rotated.read_text() and q1 in rotated.read_text()
    # the same through the control socket
    os.rename(logfile, workdir / "mx.log.2")
    p = gw.cli("reopen-logs")
    assert p.returncode == 0 and f"reopened {logfile}" in p.stdout, p.stdout + p.stderr
    q3 = gw.send(SENDER, [RCPT], make_message()[0])
    wait_for(lambda: logfile.exists() and q3 in logfile.read_text(), scaled(5),
             what="third message in the file reopened by the CLI")
    assert gw.is_running()
