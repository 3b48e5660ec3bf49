"""Privileges (issue 6): `mxgate run` started as root binds its ports, then
becomes the configured user and group (no supplementary groups, root cannot
be regained) and holds only the descriptors it needs; started as root
without `user` it refuses to serve a port below 1024 unless [server]
allow_root = yes.  Needs root (skipped otherwise) and the Debian account
nobody / nogroup."""

import grp
import os
import pwd
import socket
from pathlib import Path

import pytest

from mxtest import GatewayError, make_message, pid_listens_on, scaled, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privilege tests need root")

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
# The folders of a queue made by an earlier version; free/ (recycled files)
# and quarantine/ are left out on purpose: mxgate creates them as root and
# must hand them to the queue's owner.
QUEUE_SUBDIRS = ("incoming", "msg", "active", "deferred", "hold", "corrupt")


def nobody():
    try:
        return pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    except KeyError:
        pytest.skip("no nobody/nogroup account")


def privileged_port():
    """A free port below 1024 on 127.0.0.1."""
    for port in range(980, 600, -7):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


def prepare_tree(gw, uid, gid):
    """What a package's postinst does: the queue and mailbox owned by the
    service account (root creates nothing mxgate must write later)."""
    os.chown(gw.tmp, uid, gid)
    gw.queue_dir.mkdir(exist_ok=True)
    for d in QUEUE_SUBDIRS:
        (gw.queue_dir / d).mkdir(exist_ok=True)
    gw.mailbox_dir.mkdir(exist_ok=True)
    for p in [gw.queue_dir, gw.mailbox_dir] + [gw.queue_dir / d for d in QUEUE_SUBDIRS]:
        os.chown(p, uid, gid)
    # the daemon must be able to reach its folders
    p = gw.tmp
    while p != Path("/"):
        os.chmod(p, os.stat(p).st_mode | 0o111)
        p = p.parent


def proc_ids(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                out[k] = [int(x) for x in v.split()]
    return out


def fds(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def test_drops_to_user_and_group_after_binding(gateway):
    pw, gr = nobody()
    port = privileged_port()
    gw = gateway({"server": {"user": "nobody", "group": "nogroup",
                             "listen": f"127.0.0.1:{port}"}}, start=False)
    gw.port = port
    prepare_tree(gw, pw.pw_uid, gr.gr_gid)
    gw.start()
    pid = gw.proc.pid
    assert pid_listens_on(pid, port), "the privileged port is not bound"
    ids = proc_ids(pid)
    assert ids["Uid"] == [pw.pw_uid] * 4, f"uids after start: {ids['Uid']}"
    assert ids["Gid"] == [gr.gr_gid] * 4, f"gids after start: {ids['Gid']}"
    assert ids["Groups"] in ([], [gr.gr_gid]), f"supplementary groups kept: {ids['Groups']}"
    gw.wait_log(r"dropped privileges user=nobody")
    # every thread dropped too (the I/O and policy threads start before)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            uid_line = next(x for x in f if x.startswith("Uid:"))
        assert [int(x) for x in uid_line.split()[1:]] == [pw.pw_uid] * 4, \
            f"thread {tid} still has {uid_line.strip()}"
    # it works as nobody: receive, queue, deliver
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg)
    gw.wait_for_marker(marker)
    assert os.stat(gw.mailbox_files()[0]).st_uid == pw.pw_uid
    # a folder new to an existing queue belongs to the queue's owner, and
    # the delivered message's files were recycled into it
    free = gw.queue_dir / "free"
    assert os.stat(free).st_uid == pw.pw_uid, "free/ created for root, not the queue's owner"
    assert os.stat(gw.queue_dir / "quarantine").st_uid == pw.pw_uid, \
        "quarantine/ created for root, not the queue's owner"
    wait_for(lambda: any(free.iterdir()), scaled(5), what="delivered files recycled in free/")
    # only what it needs: sockets, pipes/eventfds, its log, its own folders
    allowed = (str(gw.tmp), "socket:", "pipe:", "anon_inode:", "/dev/null", "/dev/urandom")
    stray = [t for t in fds(pid) if not t.startswith(allowed)]
    assert not stray, f"descriptors mxgate does not need: {stray}"


def test_refuses_root_on_privileged_port_without_user(gateway):
    port = privileged_port()
    gw = gateway({"server": {"listen": f"127.0.0.1:{port}"}}, start=False)
    gw.port = port
    with pytest.raises(GatewayError):
        gw.start(timeout=scaled(10))
    assert "refusing to run as root" in gw.log_text()
    assert gw.proc is None or gw.proc.poll() is not None
    gw.proc = None


def test_allow_root_is_explicit(gateway):
    port = privileged_port()
    gw = gateway({"server": {"listen": f"127.0.0.1:{port}", "allow_root": "yes"}},
                 start=False)
    gw.port = port
    gw.start()
    assert proc_ids(gw.proc.pid)["Uid"][0] == 0
    gw.wait_log(r"running as root \(allow_root = yes\)")


def test_user_root_refused(gateway):
    gw = gateway({"server": {"user": "root"}}, start=False)
    with pytest.raises(GatewayError):
        gw.start(timeout=scaled(10))
    assert "is root: refusing to run as root" in gw.log_text()
    gw.proc = None


def test_unprivileged_port_as_root_warns(gateway):
    gw = gateway()
    gw.wait_log(r"running as root without \[server\] user")


def test_queue_not_writable_by_user_refuses_to_start(gateway):
    """A queue the service account cannot write would turn every message
    into a 451 after the drop: mxgate refuses to start and says why."""
    nobody()
    gw = gateway({"server": {"user": "nobody", "group": "nogroup"}}, start=False)
    os.chmod(gw.tmp, 0o755)           # root-owned, not writable by nobody
    with pytest.raises(GatewayError):
        gw.start(timeout=scaled(10))
    assert "is not writable by user nobody" in gw.log_text()
    gw.proc = None
