"""Issue 16, deploy/aws/mxgate-aws-boot: the queue's EBS volume survives the
instance and is re-attached by its replacement, the Elastic IP race never
lets mxgate accept mail from an address SES blocks, certificate rotation
reloads mxgate.  The real script runs with real curl against an instance
metadata server on loopback, and with fakes of aws, lsblk, blkid, mkfs.ext4,
mount, mountpoint, systemctl, chown and sleep on PATH (fake_aws.py, one
shared JSON state standing for the account and the block devices)."""

import json
import os
import shutil
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import mxtest

SRC = Path(mxtest.source_dir())
SCRIPT = SRC / "deploy" / "aws" / "mxgate-aws-boot"
FAKE = Path(__file__).with_name("fake_aws.py")
FAKES = ["aws", "lsblk", "blkid", "mkfs.ext4", "mount", "umount", "mountpoint",
         "systemctl", "chown", "sleep", "mxgate", "getent"]
STACK = "mxgate-prod"
ME = "i-0new"
AZ = "eu-west-1a"


def eip(n, owner=None):
    a = {"AllocationId": f"eipalloc-{n}", "PublicIp": f"192.0.2.{n}",
         "Tags": [{"Key": "mxgate-stack", "Value": STACK},
                  {"Key": "mxgate-helo", "Value": f"out{n}.example.com"}]}
    if owner:
        a.update(InstanceId=owner, AssociationId=f"eipassoc-{owner}")
    return a


def vol(n, az=AZ, owner=None, fs="ext4", stack=STACK, data=None, tags=None):
    """A queue volume; data: a marker standing for its files (it travels
    through a snapshot to a copy)."""
    v = {"VolumeId": f"vol-{n:017x}", "AvailabilityZone": az, "State": "available",
         "Size": 30, "Tags": {"mxgate-stack": stack, "mxgate-role": "queue", **(tags or {})}}
    if data:
        v["data"] = data
    if owner:
        v.update(State="in-use", InstanceId=owner)
    if fs:
        v["fs"] = fs
    return v


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.state = tmp / "state.json"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name in FAKES:
            (self.bin / name).symlink_to(FAKE)
        self.tls = tmp / "tls"
        self.tls.mkdir()
        self.spool = tmp / "spool"
        self.conf = tmp / "mxgate.conf"
        self.conf.write_text("[server]\nhostname = mx.example.com\nlisten = 0.0.0.0:25\n\n"
                             "[mta_sts]\nmx_hosts = mx.example.com\n")
        self.rundir = tmp / "run"
        self.rundir.mkdir()
        (tmp / "aws.env").write_text(
            f"STACK={STACK}\nREGION=eu-west-1\nASG={STACK}-gateways\n"
            f"LAUNCH_HOOK={STACK}-launch\nCFN_RESOURCE=GatewayGroup\nQUEUE_VOLUME_SIZE=30\n"
            "TLS_CERT_SECRET=arn:cert\nTLS_KEY_SECRET=arn:key\nEIP_WAIT_TRIES=4\n"
            "ATTACH_WAIT_TRIES=3\nDRAIN_HOOK=mxgate-prod-drain\nBUCKET=archive\n"
            "MAX_DRAIN_MINUTES=5\nLOCK_TABLE=mxgate-prod-QueueAdoptLocks\n")
        cert, key = make_pair(tmp, "boot")
        self.put({"instance": ME, "az": AZ, "addresses": [], "volumes": [],
                  "secrets": {"arn:cert": cert, "arn:key": key}})
        env = self

        class Imds(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_PUT(self):
                self._send("token-1" if self.path == "/latest/api/token" else None)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                    return self._send(None, 401)
                st = env.get()
                paths = {"/latest/meta-data/instance-id": st["instance"],
                         "/latest/meta-data/autoscaling/target-lifecycle-state":
                             st.get("lifecycle", "InService"),
                         "/latest/meta-data/placement/availability-zone": st["az"]}
                self._send(paths.get(self.path))

            def _send(self, body, code=200):
                if body is None:
                    code = 404 if code == 200 else code
                    body = ""
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.imds = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
        threading.Thread(target=self.imds.serve_forever, daemon=True).start()

    def get(self):
        return json.loads(self.state.read_text())

    def put(self, st):
        self.state.write_text(json.dumps(st))

    def update(self, **kw):
        st = self.get()
        st.update(kw)
        self.put(st)

    def calls(self, prog=None):
        log = self.tmp / "state.json.log"
        if not log.exists():
            return []
        out = [json.loads(ln) for ln in log.read_text().splitlines()]
        return [c for c in out if prog is None or c[0] == prog]

    def run(self, *args):
        env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}",
                   FAKE_AWS_STATE=str(self.state), MXGATE_AWS_ENV=str(self.tmp / "aws.env"),
                   MXGATE_SPOOL=str(self.spool), MXGATE_TLS_DIR=str(self.tls),
                   MXGATE_CONF=str(self.conf), MXGATE_RUN_DIR=str(self.rundir),
                   IMDS_URL="http://127.0.0.1:%d" % self.imds.server_address[1])
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                              text=True, timeout=60, start_new_session=True)

    def mxgate_running(self):
        return self.get().get("services", {}).get("mxgate.service", False)

    def close(self):
        self.imds.shutdown()
        self.imds.server_close()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def index_of(calls, pred):
    for i, c in enumerate(calls):
        if pred(c):
            return i
    raise AssertionError(f"no such call in {calls}")


def lifecycle_results(env):
    return [c[c.index("--lifecycle-action-result") + 1] for c in env.calls("aws")
            if c[1:3] == ["autoscaling", "complete-lifecycle-action"]]


def test_first_boot_creates_formats_and_mounts_queue_volume(env):
    env.update(addresses=[eip(1), eip(2), eip(3)])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    mine = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert len(mine) == 1
    v = mine[0]
    assert v["AvailabilityZone"] == AZ and v["Encrypted"] and v["Size"] == 30
    assert v["Tags"] == {"mxgate-stack": STACK, "mxgate-role": "queue", "Name": f"{STACK}-queue"}
    assert v["fs"] == "ext4"                                     # new volume: formatted
    assert st["mounts"] == {str(env.spool): "/dev/nvme1n1"}
    assert [a["AllocationId"] for a in st["addresses"] if a.get("InstanceId") == ME] \
        == ["eipalloc-1"]
    assert env.mxgate_running()
    # HELO name of the claimed address (its A, SPF and PTR name); the MX
    # name for MTA-STS stays
    assert env.conf.read_text() == ("[server]\nhostname = out1.example.com\nlisten = 0.0.0.0:25\n"
                                    "\n[mta_sts]\nmx_hosts = mx.example.com\n")
    calls = env.calls()
    start = index_of(calls, lambda c: c[:2] == ["systemctl", "start"])
    assert start > index_of(calls, lambda c: c[0] == "mount")
    assert start > index_of(calls, lambda c: c[1:3] == ["ec2", "associate-address"])
    assert lifecycle_results(env) == ["CONTINUE"]
    sig = [c for c in env.calls("aws") if c[1:3] == ["cloudformation", "signal-resource"]]
    assert sig and sig[0][sig[0].index("--status") + 1] == "SUCCESS"


def test_replacement_reattaches_the_queue_of_the_dead_instance_without_formatting(env):
    # the dead instance's queue volume (ours, this AZ), one in another AZ,
    # one of another stack, one still in use by the other gateway
    env.update(addresses=[eip(1, "i-peer"), eip(2)],
               volumes=[vol(1, az="eu-west-1b"), vol(2, stack="other"),
                        vol(3, owner="i-peer"), vol(4)])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert [v["VolumeId"] for v in st["volumes"] if v.get("InstanceId") == ME] == [vol(4)["VolumeId"]]
    assert len(st["volumes"]) == 4                                   # nothing created
    assert not env.calls("mkfs.ext4")                               # the queue is not wiped
    assert st["mounts"] == {str(env.spool): "/dev/nvme4n1"}
    assert env.mxgate_running()


def test_replacement_waits_for_the_volume_of_an_instance_still_shutting_down(env):
    # the instance died a moment ago: its volume is still attached to it; the
    # other gateway's volume is in use by a running instance
    env.update(addresses=[eip(1)], volumes=[vol(1, owner="i-dead"), vol(2, owner="i-peer")],
               instances={"i-dead": "shutting-down", "i-peer": "running"})
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert len(st["volumes"]) == 2                      # no new, empty volume
    assert st["volumes"][0].get("InstanceId") == ME     # the dead one's queue
    assert st["volumes"][1]["InstanceId"] == "i-peer"   # the running one's untouched
    assert not env.calls("mkfs.ext4")
    assert env.mxgate_running()


def test_reboot_keeps_the_attached_volume(env):
    env.update(addresses=[eip(1, ME)], volumes=[vol(1), vol(2, owner=ME)])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert not [c for c in env.calls("aws") if c[2] in ("attach-volume", "create-volume",
                                                         "associate-address")]
    assert env.get()["mounts"] == {str(env.spool): "/dev/nvme2n1"}


def test_volume_race_loser_takes_the_next_or_a_new_volume(env):
    env.update(addresses=[eip(1)], volumes=[vol(1)], steal_volume=[vol(1)["VolumeId"]])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert st["volumes"][0]["InstanceId"] == "i-other"
    mine = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert len(mine) == 1 and mine[0]["VolumeId"] != vol(1)["VolumeId"]
    assert env.mxgate_running()


def test_volume_not_mounted_means_mxgate_not_started(env):
    env.update(addresses=[eip(1)], volumes=[vol(1)], broken_devices=["/dev/nvme1n1"])
    p = env.run("boot")
    assert p.returncode != 0
    assert "not mounted" in p.stderr
    assert not env.mxgate_running()
    assert not [c for c in env.calls("systemctl") if c[1] == "start"]
    assert lifecycle_results(env) == ["ABANDON"]


def test_eip_race_waits_and_never_starts_from_a_blocked_address(env):
    # both EIPs held by the running gateways: no allowed address for us
    env.update(addresses=[eip(1, "i-a"), eip(2, "i-b")])
    p = env.run("boot")
    assert p.returncode != 0
    assert "no Elastic IP" in p.stderr
    assert not [c for c in env.calls("systemctl") if c[1] == "start"]
    assert not env.mxgate_running()
    assert not env.calls("mount")             # nothing done before the address is ours
    beats = [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]
    assert len(beats) == 4                    # EIP_WAIT_TRIES
    assert lifecycle_results(env) == ["ABANDON"]


def test_eip_race_loser_retries_and_starts_once_an_address_is_freed(env):
    # eip 2 is grabbed by another replacement between describe and associate;
    # eip 1 is freed when the instance being replaced is gone
    env.update(addresses=[eip(1, "i-old"), eip(2)], steal_eip=["eipalloc-2"],
               free_eip_after=[3, "eipalloc-1"])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert [a["AllocationId"] for a in st["addresses"] if a.get("InstanceId") == ME] \
        == ["eipalloc-1"]
    assert env.mxgate_running()
    assert len([c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]) >= 1


def test_check_eip_stops_mxgate_without_an_allowed_address(env):
    env.update(addresses=[eip(1, ME), eip(2, "i-b")], volumes=[vol(1, owner=ME)])
    assert env.run("boot").returncode == 0
    assert env.mxgate_running()
    assert env.run("check-eip").returncode == 0
    assert env.mxgate_running()
    # an operator's stop is not undone
    env.update(services={"mxgate.service": False})
    assert env.run("check-eip").returncode == 0
    assert not env.mxgate_running()
    env.update(services={"mxgate.service": True})
    # an EC2 API error (throttling) is no reason to take the gateway out
    env.update(fail_api=["describe-addresses"])
    p = env.run("check-eip")
    assert p.returncode != 0 and "no change" in p.stderr
    assert env.mxgate_running()
    env.update(fail_api=[])
    # someone re-associated our address elsewhere (allow-reassociation)
    st = env.get()
    st["addresses"][0].update(InstanceId="i-c", AssociationId="eipassoc-c")
    env.put(st)
    p = env.run("check-eip")
    assert p.returncode != 0 and "lost its Elastic IP" in p.stderr
    assert not env.mxgate_running()           # listener down: the NLB health check fails
    # the address comes back free: claimed again, mxgate started
    st = env.get()
    for k in ("InstanceId", "AssociationId"):
        st["addresses"][0].pop(k)
    env.put(st)
    assert env.run("check-eip").returncode == 0
    assert env.mxgate_running()
    assert "hostname = out1.example.com" in env.conf.read_text()


def make_pair(tmp, name, cn="mx.example.com"):
    k, c = tmp / f"{name}.key", tmp / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(k), "-out", str(c),
                    "-days", "2", "-subj", f"/CN={cn}"], check=True, capture_output=True,
                   timeout=60)
    return c.read_text(), k.read_text()


def test_refresh_cert_installs_rotation_and_reloads(env, tmp_path):
    c1, k1 = make_pair(tmp_path, "one")
    c2, k2 = make_pair(tmp_path, "two")
    env.update(secrets={"arn:cert": c1, "arn:key": k1}, services={"mxgate.service": True})
    assert env.run("refresh-cert").returncode == 0
    assert (env.tls / "fullchain.pem").read_text() == c1
    assert (env.tls / "privkey.pem").read_text() == k1
    assert len([c for c in env.calls("systemctl") if c[1] == "reload"]) == 1
    # unchanged: no reload
    assert env.run("refresh-cert").returncode == 0
    assert len([c for c in env.calls("systemctl") if c[1] == "reload"]) == 1
    # rotation half done (new certificate, old key): keep the working pair
    env.update(secrets={"arn:cert": c2, "arn:key": k1}, services={"mxgate.service": True})
    p = env.run("refresh-cert")
    assert p.returncode != 0 and "do not match" in p.stderr
    assert (env.tls / "fullchain.pem").read_text() == c1
    assert len([c for c in env.calls("systemctl") if c[1] == "reload"]) == 1
    # rotation complete
    env.update(secrets={"arn:cert": c2, "arn:key": k2}, services={"mxgate.service": True})
    assert env.run("refresh-cert").returncode == 0
    assert (env.tls / "fullchain.pem").read_text() == c2
    assert (env.tls / "privkey.pem").read_text() == k2
    assert len([c for c in env.calls("systemctl") if c[1] == "reload"]) == 2
    assert not [p for p in env.tls.iterdir() if p.name.startswith(".new")]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_boot_script_shellcheck():
    p = subprocess.run(["shellcheck", "-s", "bash", str(SCRIPT)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout


def test_mxgate_failing_to_start_abandons_the_launch(env):
    env.update(addresses=[eip(1)], fail_start=True)
    p = env.run("boot")
    assert p.returncode != 0 and "mxgate failed to start" in p.stderr
    assert lifecycle_results(env) == ["ABANDON"]
    sig = [c for c in env.calls("aws") if c[1:3] == ["cloudformation", "signal-resource"]]
    assert sig[-1][sig[-1].index("--status") + 1] == "FAILURE"


def test_no_certificate_means_mxgate_not_started(env):
    env.update(addresses=[eip(1)], secrets={})
    p = env.run("boot")
    assert p.returncode != 0 and "no certificate" in p.stderr
    assert not [c for c in env.calls("systemctl") if c[1] == "start"]
    assert not list(env.tls.iterdir())          # nothing half-written left behind


def drain_setup(env, counts, queued_files=()):
    env.update(addresses=[eip(1, ME)], volumes=[vol(1, owner=ME)],
               services={"mxgate.service": True, "mxgate-check-eip.timer": True},
               mounts={str(env.spool): "/dev/nvme1n1"}, queue_counts=counts)
    for d in ("active", "deferred", "hold", "quarantine", "msg", "free"):
        (env.spool / d).mkdir(parents=True)
    for f in queued_files:
        (env.spool / f).write_text("queued")


def drain_results(env):
    return [(c[c.index("--lifecycle-hook-name") + 1], c[c.index("--lifecycle-action-result") + 1])
            for c in env.calls("aws") if c[1:3] == ["autoscaling", "complete-lifecycle-action"]]


def test_drain_does_nothing_while_in_service(env):
    drain_setup(env, [4])
    assert env.run("drain").returncode == 0
    assert env.mxgate_running() and not drain_results(env) and not env.calls("umount")


def test_drain_waits_for_an_empty_queue_then_unmounts_and_continues(env):
    drain_setup(env, [3, 1, 0])
    env.update(lifecycle="Terminated")
    p = env.run("drain")
    assert p.returncode == 0, p.stderr
    beats = [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]
    assert len(beats) == 2 and all("mxgate-prod-drain" in c for c in beats)
    st = env.get()
    assert not st["services"]["mxgate.service"] and not st["services"]["mxgate-check-eip.timer"]
    assert "s3" not in st                               # nothing left: no copy
    assert st["mounts"] == {}                           # unmounted cleanly
    assert drain_results(env) == [("mxgate-prod-drain", "CONTINUE")]
    # the timer firing again before the end changes nothing
    assert env.run("drain").returncode == 0
    assert len(drain_results(env)) == 1


def test_drain_time_up_copies_the_rest_to_s3_and_leaves_it_on_the_volume(env):
    drain_setup(env, [7], queued_files=["active/Q1", "msg/Q1"])
    env.update(lifecycle="Terminated")
    p = env.run("drain")
    assert p.returncode == 0, p.stderr
    beats = [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]
    assert len(beats) == 5                              # MAX_DRAIN_MINUTES
    st = env.get()
    (key, size), = st["s3"].items()
    assert key.startswith(f"s3://archive/{ME}-") and key.endswith(".tgz") and size > 0
    assert (env.spool / "active" / "Q1").exists()       # the queue stays on the volume
    assert st["mounts"] == {}
    assert drain_results(env) == [("mxgate-prod-drain", "CONTINUE")]
    stop = index_of(env.calls(), lambda c: c[:2] == ["systemctl", "stop"])
    assert stop < index_of(env.calls(), lambda c: c[1:3] == ["s3", "cp"])


def archive_members(env):
    """The files of the one archive copied to the (fake) S3 bucket."""
    (key, _), = env.get()["s3"].items()
    saved = env.tmp / "s3" / key.rsplit("/", 1)[1]
    with tarfile.open(saved) as t:
        return sorted(m.name for m in t.getmembers() if m.isfile())


@pytest.mark.parametrize("folder", ["hold", "quarantine"])
def test_drain_does_not_wait_for_held_or_quarantined_mail_and_archives_it(env, folder):
    # three messages, none deliverable: held / quarantined mail waits for a
    # person, not for delivery - the drain must not sit out MaxDrainMinutes
    drain_setup(env, [[3, 0]], queued_files=[f"{folder}/Q1", f"{folder}/Q2", "active/Q3.tmp",
                                             "msg/Q1", "msg/Q2", "free/Q9.m"])
    env.update(lifecycle="Terminated")
    p = env.run("drain")
    assert p.returncode == 0, p.stderr
    assert not [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]
    assert f"{folder}=2" in p.stderr and "active=" not in p.stderr
    # the held/quarantined mail is copied too, with its payloads; free/ is not
    assert archive_members(env) == sorted(["spool/active/Q3.tmp", f"spool/{folder}/Q1",
                                           f"spool/{folder}/Q2", "spool/msg/Q1",
                                           "spool/msg/Q2"])
    assert drain_results(env) == [("mxgate-prod-drain", "CONTINUE")]
    assert env.get()["mounts"] == {}


def test_drain_waits_for_deliverable_mail_only(env):
    # 5 messages of which 2 are held: it waits while deferred mail is being
    # delivered, and stops waiting when only the held ones are left
    drain_setup(env, [[5, 3], [4, 2], [2, 0]], queued_files=["hold/Q1", "hold/Q2"])
    env.update(lifecycle="Terminated")
    p = env.run("drain")
    assert p.returncode == 0, p.stderr
    beats = [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]
    assert len(beats) == 2
    assert archive_members(env) == ["spool/hold/Q1", "spool/hold/Q2"]
    assert drain_results(env) == [("mxgate-prod-drain", "CONTINUE")]


def test_drain_with_a_real_mxgate_status_stops_waiting_for_held_mail(env, gateway):
    """The status line the drain reads, from a real mxgate: a deferred and a
    held message are two messages but one deliverable; once the deferred one
    is gone, only held mail is left and the drain ends at once, archiving it."""
    from downstream import relay_extra
    gw = gateway(relay_extra([f"127.0.0.1:{mxtest.closed_port()}"],
                             queue={"retry_schedule": "1h", "max_lifetime": "1d"}))
    sender = "sender@example.test"
    q1 = gw.send(sender, ["a@example.test"], mxtest.make_message(sender=sender)[0])
    q2 = gw.send(sender, ["b@example.test"], mxtest.make_message(sender=sender)[0])
    gw.wait_log(q1 + r" status=deferred attempts=1")
    gw.wait_log(q2 + r" status=deferred attempts=1")
    gw.cli("queue", "hold", q1, check=True)
    mxtest.wait_for(lambda: q1 in gw.queue_ids(("hold",)), mxtest.scaled(5), what="q1 held")
    out = gw.cli("status", check=True).stdout
    assert "\nqueue_messages: 2\n" in out and "\nqueue_deliverable: 1\n" in out, out
    gw.cli("queue", "delete", q2, check=True)
    mxtest.wait_for(lambda: "\nqueue_deliverable: 0\n" in gw.cli("status").stdout,
                    mxtest.scaled(5), what="queue_deliverable: 0")
    assert "\nqueue_messages: 1\n" in gw.cli("status").stdout
    # the drain, with this mxgate's status and queue
    (env.bin / "mxgate").unlink()
    (env.bin / "mxgate").write_text(f"#!/bin/sh\nexec {mxtest.mxgate_bin()} \"$@\"\n")
    (env.bin / "mxgate").chmod(0o755)
    env.conf, env.spool = gw.config_path, gw.queue_dir
    env.update(lifecycle="Terminated", mounts={str(gw.queue_dir): "/dev/nvme1n1"},
               services={"mxgate.service": True})
    p = env.run("drain")
    assert p.returncode == 0, p.stderr
    assert not [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"], \
        p.stderr
    names = archive_members(env)
    assert f"queue/hold/{q1}" in names and f"queue/msg/{q1}" in names, names
    assert not [n for n in names if q2 in n or "/free/" in n], names
    assert drain_results(env) == [("mxgate-prod-drain", "CONTINUE")]


# ------------------------------------------------------------ queue volumes in another AZ

OTHER_AZ = "eu-west-1b"


def vol_by_id(st, vid):
    return [v for v in st["volumes"] if v["VolumeId"] == vid]


def test_replacement_in_another_az_adopts_the_stranded_queue(env):
    # the dead instance's queue is in eu-west-1b; the replacement landed in
    # eu-west-1a (GatewayCount=1 over two subnets): the queue must follow
    src = vol(1, az=OTHER_AZ, data="Q1 Q2", tags={"mxgate-queue": "mail"})
    env.update(addresses=[eip(1)], volumes=[src, vol(2, az=OTHER_AZ, stack="other", data="x"),
                                            vol(3, az=OTHER_AZ, owner="i-peer", data="peer")],
               instances={"i-peer": "running"})
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    mine = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert len(mine) == 1
    new = mine[0]
    assert new["AvailabilityZone"] == AZ and new["data"] == "Q1 Q2"   # the same queue
    assert new["fs"] == "ext4" and not env.calls("mkfs.ext4")         # never formatted
    assert new["Tags"]["mxgate-role"] == "queue" and new["Encrypted"] and new["Size"] == 30
    assert "mxgate-queue" not in new["Tags"]                          # the drain mark is gone
    assert st["mounts"] == {str(env.spool): "/dev/nvme%dn1" % (st["volumes"].index(new) + 1)} \
        or st["mounts"][str(env.spool)]
    # the old volume is gone, with its snapshot and the claim; the others stay
    assert st["deleted_volumes"] == [src["VolumeId"]]
    assert not st["snapshots"] and len(st["deleted_snapshots"]) == 1
    assert st["locks"] == {}
    assert vol_by_id(st, vol(2)["VolumeId"]) and vol_by_id(st, vol(3)["VolumeId"])
    assert env.mxgate_running()
    # the order: claimed, snapshot, copy, mounted, claim final - and only
    # then the old volume deleted; mxgate after all of it
    calls = env.calls()
    at = {name: index_of(calls, pred) for name, pred in [
        ("claim", lambda c: c[1:3] == ["dynamodb", "put-item"]),
        ("snapshot", lambda c: c[1:3] == ["ec2", "create-snapshot"]),
        ("copy", lambda c: c[1:3] == ["ec2", "create-volume"] and "--snapshot-id" in c),
        ("mount", lambda c: c[0] == "mount"),
        ("final", lambda c: c[1:3] == ["dynamodb", "update-item"]),
        ("delete", lambda c: c[1:3] == ["ec2", "delete-volume"]),
        ("start", lambda c: c[:2] == ["systemctl", "start"])]}
    assert at["claim"] < at["snapshot"] < at["copy"] < at["mount"] < at["final"] \
        < at["delete"] < at["start"], at


def test_own_az_mail_first_then_adoption_then_own_az_empty(env):
    # an empty drained volume here and a queue with mail in the other AZ:
    # the mail wins (the empty one stays for later)
    env.update(addresses=[eip(1)],
               volumes=[vol(1, tags={"mxgate-queue": "empty"}), vol(2, az=OTHER_AZ, data="Q9")])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert mine["data"] == "Q9" and st["deleted_volumes"] == [vol(2)["VolumeId"]]
    assert vol_by_id(st, vol(1)["VolumeId"])[0]["State"] == "available"


def test_own_az_queue_is_attached_rather_than_adopting(env):
    env.update(addresses=[eip(1)], volumes=[vol(1, az=OTHER_AZ, data="far"), vol(2, data="near")])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert vol_by_id(st, vol(2)["VolumeId"])[0].get("InstanceId") == ME
    assert not [c for c in env.calls("aws") if c[1] == "dynamodb" or c[2] == "create-snapshot"]


def test_empty_and_superseded_volumes_elsewhere_are_not_adopted(env):
    env.update(addresses=[eip(1)],
               volumes=[vol(1, az=OTHER_AZ, tags={"mxgate-queue": "empty"}),
                        vol(2, az=OTHER_AZ, data="dup", tags={"mxgate-superseded-by": "vol-x"})])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert not [c for c in env.calls("aws") if c[1] == "dynamodb" or c[2] == "create-snapshot"]
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert "data" not in mine and "SnapshotId" not in mine             # a new, empty one


def test_two_instances_never_adopt_the_same_volume(env):
    # another replacement claims vol 1 just before us (the conditional
    # write fails for us): we adopt vol 2 instead, vol 1 is left alone
    env.update(addresses=[eip(1)],
               volumes=[vol(1, az=OTHER_AZ, data="A"), vol(2, az="eu-west-1c", data="B")],
               steal_lock={vol(1)["VolumeId"]: "i-rival"})
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert "claimed by another instance" in p.stderr
    st = env.get()
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert mine["data"] == "B"
    assert vol_by_id(st, vol(1)["VolumeId"]) and st["deleted_volumes"] == [vol(2)["VolumeId"]]
    assert st["locks"][vol(1)["VolumeId"]]["Adopter"] == "i-rival"
    snaps = [c for c in env.calls("aws") if c[2] == "create-snapshot"]
    assert [c[c.index("--volume-id") + 1] for c in snaps] == [vol(2)["VolumeId"]]


def test_a_rival_claim_on_the_only_volume_means_a_new_empty_one(env):
    env.update(addresses=[eip(1)], volumes=[vol(1, az=OTHER_AZ, data="A")],
               locks={vol(1)["VolumeId"]: {"VolumeId": vol(1)["VolumeId"], "Adopter": "i-rival",
                                          "Phase": "copying", "Until": "9999999999"}})
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert vol_by_id(st, vol(1)["VolumeId"])[0]["State"] == "available"
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert "data" not in mine


def test_interrupted_adoption_resumes_without_a_second_copy(env):
    src = vol(1, az=OTHER_AZ, data="Q1")
    env.update(addresses=[eip(1)], volumes=[src], crash_after=["create-volume"])
    p = env.run("boot")                       # killed right after the copy was made
    assert p.returncode != 0
    st = env.get()
    assert vol_by_id(st, src["VolumeId"]) and len(st["snapshots"]) == 1
    copies = [v for v in st["volumes"] if v["Tags"]["mxgate-role"] == "queue-adopting"]
    assert len(copies) == 1 and copies[0]["AvailabilityZone"] == AZ
    assert not env.mxgate_running()
    # the instance reboots; this time it is killed once the copy is mounted,
    # before the claim became final
    env.update(crash_after=["mount"])
    p = env.run("boot")
    assert p.returncode != 0
    st = env.get()
    assert vol_by_id(st, src["VolumeId"])                    # nothing deleted yet
    assert vol_by_id(st, copies[0]["VolumeId"])[0].get("InstanceId") == ME
    assert st["locks"][src["VolumeId"]]["Phase"] == "copying"
    assert not env.mxgate_running()
    # the next reboot (mounts are gone) resumes with the attached copy
    env.update(mounts={})
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert "resuming the adoption" in p.stderr
    st = env.get()
    assert len([c for c in env.calls("aws") if c[2] == "create-snapshot"]) == 1
    assert len([c for c in env.calls("aws") if c[2] == "create-volume"]) == 1
    assert len(st["volumes"]) == 1
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert mine["VolumeId"] == copies[0]["VolumeId"] and mine["Tags"]["mxgate-role"] == "queue"
    assert mine["data"] == "Q1" and st["deleted_volumes"] == [src["VolumeId"]]
    assert st["locks"] == {} and not st["snapshots"]
    assert not env.calls("mkfs.ext4")
    assert env.mxgate_running()


def test_adoption_killed_before_the_copy_resumes_with_the_same_snapshot(env):
    src = vol(1, az=OTHER_AZ, data="Q1")
    env.update(addresses=[eip(1)], volumes=[src], crash_after=["create-snapshot"])
    assert env.run("boot").returncode != 0
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert len([c for c in env.calls("aws") if c[2] == "create-snapshot"]) == 1
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert mine["data"] == "Q1" and st["deleted_volumes"] == [src["VolumeId"]]


def test_an_expired_claim_of_a_dead_adopter_is_taken_over(env):
    # an adopter in eu-west-1c died half-way: its claim expired, its snapshot
    # is reused, its unfinished copy (in its AZ) is deleted
    src = vol(1, az=OTHER_AZ, data="Q1")
    leftover = vol(2, az="eu-west-1c", data="Q1",
                   tags={"mxgate-role": "queue-adopting", "mxgate-adopt-source": src["VolumeId"]})
    snap = {"SnapshotId": "snap-old", "VolumeId": src["VolumeId"], "State": "completed",
            "VolumeSize": 30, "fs": "ext4", "data": "Q1",
            "Tags": {"mxgate-stack": STACK, "mxgate-adopt-source": src["VolumeId"]}}
    env.update(addresses=[eip(1)], volumes=[src, leftover], snapshots=[snap],
               locks={src["VolumeId"]: {"VolumeId": src["VolumeId"], "Adopter": "i-dead",
                                        "Phase": "copying", "Until": "1000"}})
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    st = env.get()
    assert not [c for c in env.calls("aws") if c[2] == "create-snapshot"]
    assert sorted(st["deleted_volumes"]) == sorted([leftover["VolumeId"], src["VolumeId"]])
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert mine["SnapshotId"] == "snap-old" and mine["data"] == "Q1"
    assert st["deleted_snapshots"] == ["snap-old"]


def test_a_copy_without_file_system_is_never_formatted_and_the_source_stays(env):
    # the copy of a volume that has no file system: never formatted, the
    # copy is deleted, the old volume stays (claimed, for the alarm and a
    # person), and the gateway runs on a new empty volume
    src = vol(1, az=OTHER_AZ, fs=None, data="?")
    env.update(addresses=[eip(1)], volumes=[src])
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert "no file system on the copy" in p.stderr
    st = env.get()
    (copy,) = [c[c.index("--volume-id") + 1] for c in env.calls("aws")
               if c[2] == "detach-volume"]
    assert st["deleted_volumes"] == [copy] and copy != src["VolumeId"]
    assert vol_by_id(st, src["VolumeId"])[0]["State"] == "available"
    assert st["locks"][src["VolumeId"]]["Adopter"] == ME
    assert st["locks"][src["VolumeId"]]["Phase"] == "copying"
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert "SnapshotId" not in mine and mine["Tags"]["mxgate-role"] == "queue"
    # mkfs only on the new empty volume, once the copy was gone
    calls = env.calls()
    assert len(env.calls("mkfs.ext4")) == 1
    assert index_of(calls, lambda c: c[0] == "mkfs.ext4") > \
        index_of(calls, lambda c: c[1:3] == ["ec2", "delete-volume"])
    assert env.mxgate_running()


def test_drain_marks_the_volume_and_the_next_boot_clears_the_mark(env):
    drain_setup(env, [0])
    env.update(lifecycle="Terminated")
    assert env.run("drain").returncode == 0
    st = env.get()
    assert st["volumes"][0]["Tags"]["mxgate-queue"] == "empty"
    # with mail left, "mail"
    env2_state = env.get()
    env2_state["volumes"][0]["Tags"].pop("mxgate-queue")
    env.put(env2_state)
    (env.rundir / "mxgate-drained").unlink()
    (env.spool / "deferred" / "Q1").write_text("queued")
    env.update(services={"mxgate.service": True}, mounts={str(env.spool): "/dev/nvme1n1"})
    assert env.run("drain").returncode == 0
    assert env.get()["volumes"][0]["Tags"]["mxgate-queue"] == "mail"
    # the instance is gone, a new one attaches it: the mark is removed
    st = env.get()
    st["volumes"][0].pop("InstanceId")
    st["volumes"][0]["State"] = "available"
    st.update(instance="i-0newer", services={}, mounts={}, addresses=[eip(1)])
    env.put(st)
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert "mxgate-queue" not in env.get()["volumes"][0]["Tags"]


def test_check_volumes_publishes_the_stranded_queue_volumes(env):
    env.update(volumes=[vol(1, data="mail"),                                     # counted
                        vol(2, az=OTHER_AZ, tags={"mxgate-queue": "mail"}),       # counted
                        vol(3, az=OTHER_AZ, tags={"mxgate-role": "queue-adopting"}),  # counted
                        vol(4, tags={"mxgate-queue": "empty"}),                   # drained empty
                        vol(5, tags={"mxgate-superseded-by": "vol-x"}),           # a stale copy
                        vol(6, owner="i-peer"),                                   # in use
                        vol(7, stack="other")])                                   # not ours
    p = env.run("check-volumes")
    assert p.returncode == 0, p.stderr
    assert env.get()["metrics"] == [["mxgate", "UnattachedQueueVolumes", f"Stack={STACK}", 3.0]]
    for n in (1, 2, 3):
        assert vol(n)["VolumeId"] in p.stderr
    env.update(volumes=[vol(6, owner="i-peer")], metrics=[])
    assert env.run("check-volumes").returncode == 0
    assert env.get()["metrics"] == [["mxgate", "UnattachedQueueVolumes", f"Stack={STACK}", 0.0]]


def test_a_snapshot_that_never_completes_gives_up_and_mail_flows(env):
    # the queue's AZ is down: the adoption gives up after ADOPT_WAIT_TRIES
    # (3 x 10 minutes, with lifecycle heartbeats) and the gateway starts on a
    # new empty volume; the old one is left as it was, claimed by us
    src = vol(1, az=OTHER_AZ, data="Q1")
    env.update(addresses=[eip(1)], volumes=[src], stuck_snapshots=True)
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert "did not complete" in p.stderr
    st = env.get()
    waits = [c for c in env.calls("aws") if c[2:4] == ["wait", "snapshot-completed"]]
    beats = [c for c in env.calls("aws") if c[2] == "record-lifecycle-action-heartbeat"]
    assert len(waits) == 3 and len(beats) == 3
    assert vol_by_id(st, src["VolumeId"])[0]["State"] == "available"
    assert "deleted_volumes" not in st
    (mine,) = [v for v in st["volumes"] if v.get("InstanceId") == ME]
    assert "SnapshotId" not in mine
    assert env.mxgate_running()


# ------------------------------------------------------------ issue 17: shared state

STATE_HOST = "mxgate-prod-statecache-1abc.x7y8z9.ng.0001.euw1.cache.amazonaws.com"


def with_state(env, *addrs):
    with open(env.tmp / "aws.env", "a") as f:
        f.write(f"STATE_REDIS=redis://{STATE_HOST}:6379\n")
    env.update(dns={STATE_HOST: list(addrs)}, addresses=[eip(1), eip(2), eip(3)])


def restarts(env):
    return env.get().get("restarts", {}).get("mxgate.service", 0)


def test_check_state_restarts_mxgate_when_the_cache_endpoint_moves(env):
    """mxgate resolves [state] redis once, at start; an ElastiCache failover
    moves the primary endpoint's name to the replica.  check-state restarts
    mxgate when (and only when) the name no longer has the address mxgate
    started with."""
    with_state(env, "10.0.1.20", "10.0.1.99")
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    assert (env.rundir / "mxgate-state-addr").read_text().strip() == "10.0.1.20"
    assert [c for c in env.calls("getent")] == [["getent", "ahostsv4", STATE_HOST]]
    p = env.run("check-state")
    assert p.returncode == 0, p.stderr
    assert restarts(env) == 0                               # unchanged: left alone
    env.update(dns={STATE_HOST: ["10.0.2.31"]})             # failover
    before = len(env.calls())
    p = env.run("check-state")
    assert p.returncode == 0, p.stderr
    assert restarts(env) == 1 and env.mxgate_running()
    assert "moved from 10.0.1.20 to 10.0.2.31" in p.stderr
    assert (env.rundir / "mxgate-state-addr").read_text().strip() == "10.0.2.31"
    p = env.run("check-state")
    assert p.returncode == 0 and restarts(env) == 1         # once per move
    # gateway 1 (out1) restarts at once: no wait
    assert not [c for c in env.calls()[before:] if c[0] == "sleep"]


def test_check_state_spaces_the_restarts_of_the_gateways(env):
    """Every gateway sees the move in the same minute: the one with HELO
    name out3 waits two spacings, so the fleet never restarts at once."""
    with_state(env, "10.0.1.20")
    p = env.run("boot")
    assert p.returncode == 0, p.stderr
    env.conf.write_text(env.conf.read_text().replace("hostname = out1.", "hostname = out3."))
    env.update(dns={STATE_HOST: ["10.0.2.31"]})
    p = env.run("check-state")
    assert p.returncode == 0, p.stderr
    calls = env.calls()
    wait = index_of(calls, lambda c: c == ["sleep", "90"])
    assert wait < index_of(calls, lambda c: c[:2] == ["systemctl", "try-restart"])
    assert restarts(env) == 1
    # a drain (or check-eip) that stops mxgate during the wait wins: the
    # queue volume may be on its way out, mxgate stays stopped
    env.update(dns={STATE_HOST: ["10.0.3.7"]},
               sleep_effects=[{"services": {"mxgate.service": False}}])
    p = env.run("check-state")
    assert p.returncode == 0, p.stderr
    assert restarts(env) == 1 and not env.mxgate_running()


def test_check_state_changes_nothing_it_cannot_know(env):
    """A name that does not resolve (DNS trouble) proves nothing: no restart,
    the timer fails visibly; a stopped mxgate resolves at its next start;
    without SharedState there is nothing to check."""
    with_state(env, "10.0.1.20")
    assert env.run("boot").returncode == 0
    env.update(dns={})
    p = env.run("check-state")
    assert p.returncode == 1 and "cannot resolve" in p.stderr
    assert restarts(env) == 0 and env.mxgate_running()
    env.update(dns={STATE_HOST: ["10.0.2.31"]}, services={"mxgate.service": False})
    p = env.run("check-state")
    assert p.returncode == 0 and restarts(env) == 0 and not env.mxgate_running()
    # check-eip starts it again (after a lost address): the new one is noted
    (env.rundir / "mxgate-eip-lost").touch()
    env.update(mounts={str(env.spool): "/dev/nvme1n1"})
    assert env.run("check-eip").returncode == 0 and env.mxgate_running()
    assert (env.rundir / "mxgate-state-addr").read_text().strip() == "10.0.2.31"


def test_check_state_without_shared_state_does_nothing(env):
    env.update(addresses=[eip(1), eip(2), eip(3)])
    assert env.run("boot").returncode == 0
    p = env.run("check-state")
    assert p.returncode == 0, p.stderr
    assert not env.calls("getent") and restarts(env) == 0
    assert not (env.rundir / "mxgate-state-addr").exists()
