"""Tools that work when things are broken (issue 16): `mxgate status`,
`queue` and `reload` reach the running daemon although the file on disk has
an error; `reload` prints the problems and the changes that need a restart;
without -c the CLI says which config it uses; after SIGTERM a new MAIL gets
421; the control socket belongs to the service user and an operators'
group (mode 0660); a user who may not read the config is told so and the
CLI tries the packaged socket, one the socket does not let in is told that
(not "is mxgate running?"); the metrics listener has a whole-request
deadline and a connection cap."""

import grp
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mxtest import (assert_reply, free_port, make_message, mxgate_bin, scaled, source_dir,
                    wait_for)
from test_hostile_privileges import nobody, prepare_tree

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def broken(gw):
    """Append a bad value to the running gateway's file; its line number."""
    text = gw.config_path.read_text().rstrip("\n") + "\n[limits]\nmax_recipients = lots\n"
    gw.config_path.write_text(text)
    return len(text.splitlines())


def test_cli_reaches_daemon_with_broken_config(gateway):
    gw = gateway()
    n = broken(gw)
    p = gw.cli("status")
    assert p.returncode == 0, p.stderr
    assert f"pid: {gw.proc.pid}" in p.stdout
    assert "has 1 error" in p.stderr and str(gw.control_socket) in p.stderr, p.stderr
    p = gw.cli("queue", "list")
    assert p.returncode == 0 and "messages in queue" in p.stdout, p.stderr
    # reload reaches the daemon, which refuses the file and says why
    p = gw.cli("reload")
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"{gw.config_path}:{n}: bad value for 'max_recipients'" in p.stderr, p.stderr
    assert "reload refused: still running on the old config" in p.stderr
    assert gw.is_running()
    with gw.client() as c:
        c.ehlo()


def test_reload_reports_what_needs_a_restart(gateway):
    gw = gateway()
    gw.set_extra({"dns": {"timeout": "7s"}, "limits": {"max_recipients": "7"},
                  "mta_sts": {"max_age": "2d"}})
    p = gw.cli("reload")
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"warning: \[dns\] timeout changed from \"\w+\" to \"7s\"; .*restart",
                     p.stdout), p.stdout
    assert re.search(r"warning: \[mta_sts\] max_age changed from \"1d\" to \"2d\"; .*restart",
                     p.stdout), p.stdout
    assert f"reloaded {gw.config_path}" in p.stdout
    assert "max_recipients" not in p.stdout      # applied by the reload: nothing to say


def test_log_reads_the_log_file_of_a_broken_config(gateway, workdir):
    """Like status: `mxgate log -c FILE` reads [log] file although the file
    has an error elsewhere (an incident is when the story is needed)."""
    logfile = workdir / "mx.log"
    gw = gateway({"log": {"file": str(logfile), "level": "info"}})
    data, marker = make_message()
    qid = gw.send(SENDER, [RCPT], data)
    wait_for(lambda: re.search(qid + r" to=<" + RCPT + r">.*status=sent", logfile.read_text()),
             scaled(10), what="delivery line")
    n = broken(gw)
    p = gw.cli("log", qid)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{qid} to=<{RCPT}>" in p.stdout and "status=sent" in p.stdout, p.stdout
    assert f"{gw.config_path} has 1 error" in p.stderr and "[log] file" in p.stderr, p.stderr
    assert f":{n}: bad value" not in p.stdout + p.stderr   # a note, not the errors
    # without [log] file the broken config still says where to look instead
    text = gw.config_path.read_text().replace(f"file = {logfile}", "")
    gw.config_path.write_text(text)
    p = gw.cli("log", qid)
    assert p.returncode == 2 and "logs to stderr (no [log] file)" in p.stderr, p.stderr


def test_cli_without_c_says_which_config(workdir):
    if os.path.exists("/etc/mxgate/mxgate.conf"):
        pytest.skip("this machine has /etc/mxgate/mxgate.conf")
    p = subprocess.run([mxgate_bin(), "status"], cwd=str(workdir), capture_output=True,
                       text=True, timeout=scaled(20))
    assert "no -c given and no /etc/mxgate/mxgate.conf: using the embedded default" in p.stderr
    assert p.returncode == 1 and "is mxgate running?" in p.stderr, p.stderr


def test_mail_after_sigterm_gets_421(gateway):
    gw = gateway()
    c = gw.client()
    c.ehlo()
    assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
    assert_reply(c.cmd("DATA"), 354)
    data, marker = make_message()
    c.send(data[:-2])
    gw.proc.send_signal(signal.SIGTERM)
    gw.wait_log(r"signal 15: stopping", scaled(5))
    # the transaction in DATA finishes; a pipelined new MAIL is refused
    c.send(b"\r\n.\r\n" + f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert_reply(c.reply(timeout=scaled(10)), 250)
    assert_reply(c.reply(timeout=scaled(10)), 421)
    c.close()
    assert gw.proc.wait(scaled(20)) == 0
    gw.proc = None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as root")
def test_control_socket_owner_group_mode(gateway):
    pw, gr = nobody()
    try:
        admins = grp.getgrnam("adm")
    except KeyError:
        pytest.skip("no adm group")
    gw = gateway({"server": {"user": "nobody", "group": "nogroup"}}, start=False)
    prepare_tree(gw, pw.pw_uid, gr.gr_gid)
    gw.start()
    st = os.stat(gw.control_socket)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (pw.pw_uid, gr.gr_gid, 0o660)
    assert gw.cli("status").returncode == 0
    gw.stop()
    gw.set_extra({"server": {"user": "nobody", "group": "nogroup",
                             "control_socket_group": "adm", "control_socket_mode": "0600"}})
    gw.start()
    st = os.stat(gw.control_socket)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (pw.pw_uid, admins.gr_gid, 0o600)
    # the service user can use the CLI after the daemon dropped root
    p = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={gr.gr_gid}",
                        "--clear-groups", mxgate_bin(), "status", "-c", str(gw.config_path)],
                       capture_output=True, text=True, timeout=scaled(20))
    assert p.returncode == 0 and "pid:" in p.stdout, p.stdout + p.stderr


def scrape(port):
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def closed_by_peer(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_metrics_request_deadline_and_connection_cap(gateway):
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}", "request_timeout": "2s",
                              "max_connections": "2"}})
    assert scrape(mport).startswith(b"HTTP/1.0 200")
    # a request dripped a byte at a time, each well within evhttp's per-read
    # timeout, is cut at the deadline
    drip = socket.create_connection(("127.0.0.1", mport), timeout=scaled(5))
    drip.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
    closed = False
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline and not closed:
        try:
            drip.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        closed = closed_by_peer(drip, 0.5) if _readable(drip) else False
    drip.close()
    assert closed, "a drip-fed request outlived the request deadline"
    gw.wait_log(r"metrics connection closed reason=request_timeout")
    # the cap: two idle connections hold it; a third is closed at once
    idle = [socket.create_connection(("127.0.0.1", mport), timeout=scaled(5)) for _ in range(2)]
    time.sleep(0.2)   # both accepted before the third
    third = socket.create_connection(("127.0.0.1", mport), timeout=scaled(5))
    assert closed_by_peer(third, scaled(5)), "a connection above max_connections stayed open"
    third.close()
    gw.wait_log(r"metrics connection closed reason=max_connections")
    for s in idle:
        s.close()
    # once they are gone, scrapes work again
    wait_for(lambda: _try_scrape(mport), scaled(10), what="scrape after the idle ones left")
    text = _try_scrape(mport).decode()
    # at least the drip and the third connection (the idle ones may also
    # have reached the deadline, a scrape attempt the cap)
    for reason in ("request_timeout", "max_connections"):
        m = re.search(r'mxgate_metrics_http_closed_total\{reason="%s"\} (\d+)' % reason, text)
        assert m and int(m.group(1)) >= 1, text


def _readable(s):
    import select
    r, _, _ = select.select([s], [], [], 0.5)
    return bool(r)


def _try_scrape(port):
    try:
        data = scrape(port)
    except OSError:
        return None
    return data if data.startswith(b"HTTP/1.0 200") else None


def test_quarantine_usage_lists_every_reason():
    """`mxgate quarantine` without a command prints its synopsis: --reason
    must offer every reason a content verdict records (docs/queue-format.md,
    quarantine-reason: virus, spam, policy, attachment); it left out
    attachment."""
    from mxtest import source_dir
    row = [ln for ln in (source_dir() / "docs/queue-format.md").read_text().splitlines()
           if ln.startswith("| `quarantine-reason`")][0]
    reasons = re.findall(r"`(\w+)`", row.split("|")[4])
    assert {"virus", "spam", "policy", "attachment"} <= set(reasons), reasons
    p = subprocess.run([mxgate_bin(), "quarantine"], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode == 2, p
    m = re.search(r"--reason ([\w|]+)", p.stderr)
    assert m and set(m.group(1).split("|")) == set(reasons), p.stderr
    guide = (source_dir() / "docs/postmaster-guide.md").read_text()
    assert "[--reason " + m.group(1) + "]" in guide


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_cli_as_user_outside_the_operators_group(gateway):
    """The package's config is 0640 root:mxgate in a 0750 folder: for a user
    outside that group it is unreadable, not missing."""
    pw, gr = nobody()
    gw = gateway({"server": {"control_socket_mode": "0600"}})
    p = gw.tmp
    while p != Path("/"):
        os.chmod(p, os.stat(p).st_mode | 0o111)
        p = p.parent

    def as_nobody(*args):
        return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={gr.gr_gid}",
                               "--clear-groups", mxgate_bin(), *args,
                               "-c", str(gw.config_path)],
                              capture_output=True, text=True, timeout=scaled(20))
    # the config can be read, the socket (root's, 0600) cannot be used
    os.chmod(gw.config_path, 0o644)
    r = as_nobody("status")
    assert r.returncode != 0, r.stdout
    assert f"cannot connect to {gw.control_socket}: Permission denied: the socket" in r.stderr
    assert "control_socket_group" in r.stderr and "is mxgate running" not in r.stderr, r.stderr
    # the config cannot be read: said so, and the packaged socket is tried
    os.chmod(gw.config_path, 0o640)
    r = as_nobody("status")
    assert r.returncode != 0, r.stdout
    assert (f"mxgate: cannot read {gw.config_path}: Permission denied; trying the default "
            "control socket /run/mxgate/control.sock") in r.stderr, r.stderr
    assert "cannot connect to /run/mxgate/control.sock" in r.stderr, r.stderr
    # that default is the packaged one
    src = Path(source_dir())
    for conf in ("deploy/debian/mxgate.conf", "deploy/docker/mxgate.conf"):
        assert re.search(r"^control_socket = /run/mxgate/control\.sock$",
                         (src / conf).read_text(), re.M), conf
    # root still gets through
    assert gw.cli("status").returncode == 0


def usage_commands():
    """{command: [its sub-commands]} from `mxgate --help` (the usage text of
    gateway/main.c), so a new command is checked without editing this test."""
    p = subprocess.run([mxgate_bin(), "--help"], capture_output=True, text=True,
                       timeout=scaled(20))
    cmds = {}
    for line in (p.stdout + p.stderr).splitlines():
        m = re.search(r"\bmxgate (.*)$", line)
        if not m:
            continue
        rest = re.sub(r"\s*\|\s*", "|", m.group(1)).split(None, 1)
        for name in rest[0].split("|"):
            cmds[name] = []
        if len(rest) == 2 and "|" not in rest[0]:
            args = re.sub(r"\[[^\]]*\]", " ", rest[1])
            cmds[rest[0]] = re.findall(r"(?<![\w-])([a-z][a-z-]*)(?![\w-])", args)
    return cmds


def test_man_page_lists_every_command():
    cmds = usage_commands()
    assert {"run", "check-config", "queue", "quarantine", "reload", "status", "reopen-logs",
            "log", "dns-records", "reports", "config-reference", "version"} <= set(cmds), cmds
    assert {"list", "show", "flush", "hold", "release", "delete"} <= set(cmds["queue"])
    man = (Path(source_dir()) / "deploy/debian/mxgate.8").read_text().replace("\\-", "-")
    synopsis = man[man.index(".SH SYNOPSIS"):man.index(".SH DESCRIPTION")]
    commands = man[man.index(".SH COMMANDS"):]
    commands = commands[:commands.index("\n.SH", 1)]
    entries = " ".join(commands.split(".TP\n")[1:][i].split("\n", 1)[0]
                       for i in range(commands.count(".TP\n")))

    def has(text, word):
        return re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(word), text) is not None
    for cmd, subs in cmds.items():
        assert has(synopsis, cmd), f"{cmd} missing from SYNOPSIS of mxgate.8"
        assert has(entries, cmd), f"{cmd} has no entry under COMMANDS of mxgate.8"
        for sub in subs:
            assert has(synopsis, sub), f"{cmd} {sub} missing from SYNOPSIS of mxgate.8"
    # the signals run handles, and what no -c means
    for sig in ("SIGTERM", "SIGHUP", "SIGUSR1"):
        assert has(man[man.index(".SH SIGNALS"):], sig), sig
    assert "/etc/mxgate/mxgate.conf\nwhen it exists" in man
