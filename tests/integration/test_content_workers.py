"""Content workers ([server] content_workers, content_queue): the attachment
policy and the external-sender banner run on a bounded pool of threads, not
one thread per message.  A flood of simultaneous ends of DATA keeps the
thread count flat, what does not fit in the queue gets 451 4.3.2 (nothing
queued; the client retries), and every accepted message is delivered once.
"""

import base64
import re
import threading
import uuid

import mxtest
from test_production_observe import parse_metrics, scrape

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
FLOOD = 24


def threads_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


def message(size):
    marker = "m" + uuid.uuid4().hex[:16]
    head = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: flood {marker}\r\n"
            f"Message-ID: <{marker}@client.example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            "Content-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename=report.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n")
    payload = b"%PDF-1.4\n" + bytes(range(256)) * (size // 256)
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return head.encode() + b64 + b"--b--\r\n", marker


def open_in_data(gw, data):
    """A session that has sent the whole message but not the final dot."""
    c = mxtest.RawClient(gw.port, timeout=mxtest.scaled(60))
    c.ehlo()
    mxtest.assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    mxtest.assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
    mxtest.assert_reply(c.cmd("DATA"), 354)
    c.send(mxtest.dot_stuff(data))
    return c


def test_flood_of_content_jobs_is_bounded(gateway):
    mport = mxtest.free_port()
    gw = gateway({"server": {"content_workers": "1", "content_queue": "2"},
                  "attachments": {"enabled": "yes"},
                  "limits": {"max_connections_per_ip": "100"},
                  # the directory route writes on a thread per delivery: one
                  "queue": {"max_deliveries": "1"},
                  "metrics": {"listen": f"127.0.0.1:{mport}"}})
    pid = gw.proc.pid
    # every thread mxgate runs exists once it is up (the workers start with
    # it); a thread per message would show on top of this
    base = threads_of(pid)
    sessions = []
    try:
        for _ in range(FLOOD):
            data, marker = message(512 * 1024)
            sessions.append((open_in_data(gw, data), marker))
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], threads_of(pid))
                except OSError:
                    return

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        for c, _ in sessions:
            c.send(".\r\n")
        replies = [(c.reply(), marker) for c, marker in sessions]
        done.set()
        t.join()
    finally:
        for c, _ in sessions:
            c.close()

    accepted = [m for r, m in replies if r.code == 250]
    refused = [m for r, m in replies if r.code != 250]
    for r, _ in replies:
        assert r.code == 250 or (r.code == 451 and "4.3.2" in r.text), r
    # the pool: one worker and two waiting, so most of the burst is refused
    assert refused, "no 451 although 24 jobs met 1 worker + 2 queue slots"
    assert accepted, "nothing accepted"
    # no thread per message: the count does not grow with the burst (+1:
    # the one directory delivery that may run meanwhile)
    assert peak[0] <= base + 1, (base, peak[0])
    gw.wait_log(r"content workers busy job=attachments")
    gw.wait_log(r"reject reason=content_busy")
    # everything accepted arrives, once; nothing refused does
    gw.wait_for_mailbox(len(accepted), timeout=mxtest.scaled(30))
    for m in accepted:
        assert len(gw.find_in_mailbox(m)) == 1, m
    for m in refused:
        assert not gw.find_in_mailbox(m), m
    status, _, body = scrape(mport)
    assert status == 200
    m = parse_metrics(body)
    assert m[("mxgate_messages_rejected_total", '{reason="content_busy"}')] == len(refused)
    # the client's retry, once the burst is over, is accepted
    data, marker = message(4096)
    with gw.client() as c:
        c.ehlo()
        r = c.transaction(SENDER, [RCPT], data, expect_queued=False)
    mxtest.assert_reply(r, 250)
    gw.wait_for_marker(marker)


def test_results_of_departed_clients_are_dropped(gateway):
    """Clients that hang up while their jobs wait for the one worker: the
    completion finds no session and is dropped (logged), nothing of theirs
    is queued, the job is freed (the sanitizer build checks the teardown)
    and the gateway goes on serving."""
    gw = gateway({"server": {"content_workers": "1", "content_queue": "20"},
                  "attachments": {"enabled": "yes"},
                  "limits": {"max_connections_per_ip": "100"}})
    sessions = []
    for _ in range(8):
        data, marker = message(1024 * 1024)
        sessions.append((open_in_data(gw, data), marker))
    for c, _ in sessions:
        c.send(".\r\n")
    first, first_marker = sessions[0]
    for c, _ in sessions[1:]:
        c.close()
    mxtest.assert_reply(first.reply(), 250)
    first.close()
    gw.wait_for_marker(first_marker)
    def gone():
        return len(re.findall(r"attachment_check note=client_gone", gw.log_text()))

    def delivered():
        return sum(1 for _, m in sessions[1:] if gw.find_in_mailbox(m))
    # each departed client's job ends one way: dropped, or done before the
    # hang-up was seen (then queued and delivered once, never twice).  Which
    # one is a race (a loaded machine can finish every job before the loop
    # reads the EOFs); test_content_attachments.py's call-off test checks
    # that jobs of departed clients are dropped.
    mxtest.wait_for(lambda: gone() + delivered() >= len(sessions) - 1, mxtest.scaled(30),
                    what="every departed client's job dropped or delivered")
    assert gone() + delivered() == len(sessions) - 1, (gone(), delivered())
    for _, m in sessions:
        assert len(gw.find_in_mailbox(m)) <= 1
    data, marker = message(4096)
    with gw.client() as c:
        c.ehlo()
        mxtest.assert_reply(c.transaction(SENDER, [RCPT], data, expect_queued=False), 250)
    gw.wait_for_marker(marker)
