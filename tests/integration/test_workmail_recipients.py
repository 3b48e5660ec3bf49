"""deploy/aws/mxgate-workmail-recipients (issue 11): the recipient list from
the WorkMail directory.  The real script with Debian's python3-boto3 talks
to a loopback HTTP server speaking the subset of the WorkMail JSON 1.1 API it
uses (ListUsers, ListGroups, ListResources, ListAliases, paginated two items
per page)
through boto3's endpoint_url; then mxgate, reloaded by the script, refuses
the addresses that are not in the directory at RCPT time.
"""

import json
import os
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import mxtest
from mxtest import scaled, wait_for

SCRIPT = Path(mxtest.source_dir()) / "deploy" / "aws" / "mxgate-workmail-recipients"
ORG = "m-0123456789abcdef0123456789abcdef"
PAGE = 2


def _ensure_boto3():
    try:
        subprocess.run(["/usr/bin/python3", "-c", "import boto3"], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(["apt-get", "install", "-y", "python3-boto3"], check=True,
                       capture_output=True, env=dict(os.environ,
                                                     DEBIAN_FRONTEND="noninteractive"))


def _entity_id(short):
    """WorkMail entity ids are 12..256 characters (boto3 checks)."""
    return f"{short}-0000-4000-8000-000000000000"


class FakeWorkMail:
    """Users, groups, resources and aliases; `fail` = {target: (status, type)}."""

    def __init__(self):
        self.users = []
        self.groups = []
        self.resources = []
        self.aliases = {}
        self.fail = {}
        self.calls = []
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                op = target.split(".")[-1]
                fake.calls.append((op, body))
                if op in fake.fail:
                    status, typ = fake.fail[op]
                    return self._send(status, {"__type": typ, "message": "injected"})
                if body.get("OrganizationId") != ORG:
                    return self._send(400, {"__type": "OrganizationNotFoundException",
                                            "message": "no such organization"})
                if op == "ListUsers":
                    items, key = fake.users, "Users"
                elif op == "ListGroups":
                    items, key = fake.groups, "Groups"
                elif op == "ListResources":
                    items, key = fake.resources, "Resources"
                elif op == "ListAliases":
                    items, key = fake.aliases.get(body.get("EntityId"), []), "Aliases"
                else:
                    return self._send(400, {"__type": "UnknownOperationException"})
                start = int(body.get("NextToken") or 0)
                page = items[start:start + PAGE]
                out = {key: page}
                if start + PAGE < len(items):
                    out["NextToken"] = str(start + PAGE)
                self._send(200, out)

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def user(self, uid, email, state="ENABLED", aliases=()):
        uid = _entity_id(uid)
        self.users.append({"Id": uid, "Email": email, "Name": uid, "State": state})
        self.aliases[uid] = list(aliases)

    def group(self, gid, email, state="ENABLED", aliases=()):
        gid = _entity_id(gid)
        self.groups.append({"Id": gid, "Email": email, "Name": gid, "State": state})
        self.aliases[gid] = list(aliases)

    def resource(self, rid, email, kind="ROOM", state="ENABLED", aliases=()):
        rid = _entity_id(rid)
        self.resources.append({"Id": rid, "Email": email, "Name": rid, "Type": kind,
                               "State": state})
        self.aliases[rid] = list(aliases)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def wm():
    _ensure_boto3()
    f = FakeWorkMail()
    yield f
    f.close()


def run_script(wm, out, *args, reload_command=""):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDTEST", AWS_SECRET_ACCESS_KEY="secret",
               AWS_MAX_ATTEMPTS="2", AWS_RETRY_MODE="standard", AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run(["/usr/bin/python3", str(SCRIPT), "--organization-id", ORG,
                           "--region", "eu-west-1", "--endpoint-url", wm.url,
                           "--output", str(out), "--reload-command", reload_command, *args],
                          capture_output=True, text=True, env=env, timeout=scaled(60))


def directory(wm):
    wm.user("u1", "Alice@Example.test", aliases=["al@example.test", "alice@other.test"])
    wm.user("u2", "bob@example.test")
    wm.user("u3", "carol@example.test", aliases=["c@example.test", "cc@example.test",
                                                  "ccc@example.test"])
    wm.user("u4", "gone@example.test", state="DISABLED", aliases=["gone2@example.test"])
    wm.user("u5", "dave@example.test", state="DELETED")
    wm.group("g1", "sales@example.test", aliases=["orders@example.test"])
    wm.group("g2", "old@example.test", state="DISABLED")
    # rooms and equipment get meeting invitations at their addresses
    wm.resource("r1", "Room-1@example.test", aliases=["boardroom@example.test"])
    wm.resource("r2", "projector@example.test", kind="EQUIPMENT")
    wm.resource("r3", "oldroom@example.test", state="DISABLED", aliases=["x@example.test"])


WANT = ["al@example.test", "alice@example.test", "boardroom@example.test", "bob@example.test",
        "c@example.test", "carol@example.test", "cc@example.test", "ccc@example.test", "orders@example.test",
        "projector@example.test", "room-1@example.test", "sales@example.test"]


def listed(path):
    return [l for l in Path(path).read_text().splitlines() if l and not l.startswith("#")]


def test_writes_list_from_all_pages(wm, workdir):
    directory(wm)
    out = workdir / "recipients"
    p = run_script(wm, out, "--domain", "example.test")
    assert p.returncode == 0, p.stderr
    assert listed(out) == WANT
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    # every page was fetched (5 users in pages of 2: three ListUsers calls)
    assert [op for op, _ in wm.calls].count("ListUsers") == 3
    assert [op for op, _ in wm.calls].count("ListResources") == 2   # 3 resources
    assert [op for op, _ in wm.calls].count("ListAliases") == 7   # enabled entities only
    # without --domain, other domains' addresses are kept too
    p = run_script(wm, workdir / "all")
    assert p.returncode == 0, p.stderr
    assert "alice@other.test" in listed(workdir / "all")
    # no temp files left behind
    assert sorted(x.name for x in workdir.iterdir()) == ["all", "recipients"]


@pytest.mark.parametrize("op,status,typ", [
    ("ListAliases", 400, "AccessDeniedException"),
    ("ListGroups", 500, "InternalServerException"),
    ("ListResources", 400, "AccessDeniedException"),
    ("ListUsers", 400, "OrganizationStateException"),
])
def test_api_error_keeps_old_list(wm, workdir, op, status, typ):
    directory(wm)
    out = workdir / "recipients"
    out.write_text("old@example.test\n")
    marker = workdir / "reloaded"
    wm.fail[op] = (status, typ)
    p = run_script(wm, out, reload_command=f"touch {marker}")
    assert p.returncode == 1, p.stderr
    assert "left unchanged" in p.stderr
    assert out.read_text() == "old@example.test\n"
    assert not marker.exists()


def test_empty_directory_is_refused(wm, workdir):
    out = workdir / "recipients"
    out.write_text("old@example.test\n")
    p = run_script(wm, out)
    assert p.returncode == 1
    assert "refusing to write 0 address" in p.stderr
    assert out.read_text() == "old@example.test\n"
    # a --domain that matches nothing is refused the same way
    directory(wm)
    p = run_script(wm, out, "--domain", "typo.test")
    assert p.returncode == 1
    assert out.read_text() == "old@example.test\n"


def test_unchanged_list_does_not_reload(wm, workdir):
    directory(wm)
    out = workdir / "recipients"
    marker = workdir / "reloaded"
    assert run_script(wm, out, reload_command=f"touch {marker}").returncode == 0
    assert marker.exists()
    marker.unlink()
    p = run_script(wm, out, reload_command=f"touch {marker}")
    assert p.returncode == 0 and "unchanged" in p.stderr
    assert not marker.exists()


def test_mxgate_refuses_unknown_after_refresh(wm, workdir, gateway):
    directory(wm)
    out = workdir / "recipients"
    out.write_text("bob@example.test\n")
    gw = gateway({"domains": {"accepted_domains": "example.test, open.test",
                              "recipients_file": str(out)}})

    def rcpt(addr):
        with gw.client() as c:
            c.ehlo()
            mxtest.assert_reply(c.cmd("MAIL FROM:<s@client.example.net>"), 250)
            return c.cmd(f"RCPT TO:<{addr}>")
    mxtest.assert_reply(rcpt("alice@example.test"), 550, "5.1.1")
    n = gw.log_text().count("- reloaded config")
    reload_cmd = f"{mxtest.mxgate_bin()} reload -c {gw.config_path}"
    p = run_script(wm, out, "--domain", "example.test", reload_command=reload_cmd)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: gw.log_text().count("- reloaded config") > n, scaled(5), what="reload")
    mxtest.assert_reply(rcpt("alice@example.test"), 250)
    mxtest.assert_reply(rcpt("orders@example.test"), 250)
    mxtest.assert_reply(rcpt("boardroom@example.test"), 250)         # a room's alias
    mxtest.assert_reply(rcpt("projector@example.test"), 250)         # equipment
    mxtest.assert_reply(rcpt("oldroom@example.test"), 550, "5.1.1")  # disabled resource
    mxtest.assert_reply(rcpt("gone@example.test"), 550, "5.1.1")     # disabled user
    mxtest.assert_reply(rcpt("anyone@open.test"), 250)                # domain without a list
