"""Faults, part 2 - a full disk (issue 6).

The queue lives on a small tmpfs the test mounts (as root; skipped with a
message where mounting is impossible).  A ballast file fills most of it.
Clients then get 452 4.3.1 - at DATA, at the end of data or at the commit,
wherever the space runs out - and never a 250 for a message that is not
whole on disk; what was acknowledged stays intact (the start-up scan finds
nothing corrupt); once the ballast is removed the service resumes, and when
the downstream comes up every acknowledged message is delivered whole.
The delivered messages' files are recycled (free/), and a full disk empties
that pool so it never holds space a new message needs."""

import os
import subprocess
from pathlib import Path

import pytest

from downstream import Downstream, relay_extra
from mxtest import (assert_reply, free_port, make_message, queued_id, scaled, wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
FS_SIZE = 4 * 1024 * 1024


@pytest.fixture
def small_fs(workdir):
    mnt = Path(workdir) / "smallfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a small tmpfs")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755",
                        "tmpfs", str(mnt)], capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (container without CAP_SYS_ADMIN?): "
                    f"{p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


def fill(path, leave):
    """A ballast file that leaves about `leave` bytes free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    ballast = Path(path) / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return ballast


def test_disk_full_452_nothing_corrupt_then_recovers(gateway, small_fs):
    ds_port = free_port()
    extra = relay_extra([f"127.0.0.1:{ds_port}"],
                        queue={"retry_schedule": "1s", "directory": str(small_fs / "queue")})
    gw = gateway(extra, start=False)
    gw.queue_dir = small_fs / "queue"
    gw.start()
    ballast = fill(small_fs, 600 * 1024)
    acked = {}
    refused = []
    for i in range(40):
        msg, marker = make_message(subject=f"fill {i}", body=("f" * 78 + "\r\n") * 1300)
        with gw.client() as c:
            r = send_in(c, msg)
            if r.code == 250:
                acked[marker] = (queued_id(r), msg)
                continue
            assert_reply(r, 452, "4.3.1")
            refused.append(marker)
            assert_reply(c.cmd("NOOP"), 250)     # the session survives
        if len(refused) >= 3:
            break
    assert acked, "nothing fitted on the disk before it was full"
    assert refused, "the disk never filled up"
    # nothing half-written was acknowledged: each acked message is whole on disk
    for marker, (qid, msg) in acked.items():
        assert (gw.queue_dir / "msg" / qid).read_bytes() == msg, f"{qid} damaged on disk"
        assert qid in gw.queue_ids()
    wait_for(lambda: not gw.incoming_files(), scaled(5), what="no spool left behind")
    # a restart with the disk still full: the scan finds nothing corrupt
    gw.restart()
    corrupt = gw.queue_dir / "corrupt"
    assert not corrupt.is_dir() or not any(corrupt.iterdir()), list(corrupt.iterdir())
    assert {q for q, _ in acked.values()} <= gw.queue_ids()
    # space returns: service resumes
    ballast.unlink()
    msg, marker = make_message(subject="after space returned")
    qid = gw.send(SENDER, [RCPT], msg)
    acked[marker] = (qid, msg)
    # the downstream comes up: everything acknowledged is delivered, whole
    with Downstream(port=ds_port) as ds:
        wait_for(lambda: all(ds.find(m) for m in acked), scaled(30),
                 what=f"{len(acked)} acknowledged messages delivered")
        for marker, (qid, msg) in acked.items():
            for rec in ds.find(marker):
                assert rec.data.endswith(msg), f"{marker} delivered damaged"
        for marker in refused:
            assert not ds.find(marker), f"refused message {marker} delivered"
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
    # the delivered messages' files are kept in free/ for reuse ...
    free = gw.queue_dir / "free"
    wait_for(lambda: len(list(free.iterdir())) >= 2, scaled(5), what="files recycled in free/")
    # ... but never hold space a new message needs: the disk full again, a
    # message bigger than any of them gets 452 and the pool is emptied
    ballast = fill(small_fs, 16 * 1024)
    big, big_marker = make_message(subject="too big", body=("h" * 78 + "\r\n") * 4000)
    with gw.client() as c:
        assert_reply(send_in(c, big), 452, "4.3.1")
    wait_for(lambda: not any(free.iterdir()), scaled(5), what="free/ emptied on a full disk")
    # and what the pool held is there for the next message
    msg, marker = make_message(subject="fits after the drain", body=("i" * 78 + "\r\n") * 600)
    with gw.client() as c:
        assert_reply(send_in(c, msg), 250)
    gw.stop()


def send_in(c, msg):
    """One message in session c; the reply that settled it (at DATA or
    after the data)."""
    c.ehlo()
    assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
    r = c.cmd("DATA")
    if r.code == 354:
        c.send(msg + b".\r\n")
        r = c.reply()
    return r
