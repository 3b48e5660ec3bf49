#!/usr/bin/python3
"""Fakes for deploy/aws/mxgate-aws-boot (test_deploy_boot.py): one program,
installed on PATH under the names aws, lsblk, blkid, mkfs.ext4, mount,
umount, mountpoint, systemctl, chown, sleep, getent (ahostsv4: state dns
{name: [addresses]}) and mxgate (status only).  All of them share a JSON state file
($FAKE_AWS_STATE) standing for the AWS account and the instance's block
devices, and append every call to $FAKE_AWS_STATE.log.

The `aws` fake answers in the AWS CLI's JSON output shapes (the script filters
with jq), for: ec2 describe-addresses / associate-address / describe-volumes /
create-volume / attach-volume / wait and the adoption calls below,
autoscaling lifecycle calls,
cloudformation signal-resource, secretsmanager get-secret-value.
State keys: instance, az, addresses [{AllocationId, PublicIp, InstanceId?,
AssociationId?}], volumes [{VolumeId, AvailabilityZone, State, InstanceId?,
fs?}], mounts {dir: dev}, services {name: active?}, secrets {id: text},
steal_eip / steal_volume: ids another instance grabs just before our
associate/attach, free_eip_after: (n, alloc) frees alloc after n describes,
sleep_effects: [{key: value}] applied to the state by each sleep in turn
(what others do meanwhile); queue_counts: the `mxgate status` answers in turn (n, or [all, deliverable]);
`aws s3 cp` keeps the object in s3/ next to the state file.
Adoption across AZs: snapshots [{SnapshotId, VolumeId, State, Tags, fs?,
data?}] (a volume's fs and data marker travel through its snapshot), ec2
create-snapshot / describe-snapshots / delete-snapshot / delete-volume /
detach-volume /
create-tags / delete-tags, the DynamoDB claims table (locks {vol: item};
steal_lock {vol: adopter} lets another adopter claim it just before us),
cloudwatch put-metric-data (metrics), stuck_snapshots (never complete).
crash_after [op or program]: the
call is done, then the script is killed (a boot interrupted there).
"""

import fcntl
import json
import os
import signal
import sys

STATE = os.environ["FAKE_AWS_STATE"]


def load():
    with open(STATE) as f:
        return json.load(f)


def save(st):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f, indent=1)
    os.replace(tmp, STATE)


def arg(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


def filters(argv):
    out = {}
    if "--filters" not in argv:
        return out
    for f in argv[argv.index("--filters") + 1:]:
        if f.startswith("--"):
            break
        name, values = f.split(",Values=", 1)
        out[name[len("Name="):]] = values.split(",")
    return out


class AwsError(Exception):
    pass


def fail(code, msg):
    raise AwsError(f"An error occurred ({code}) when calling the operation: {msg}")


def tags_of(x):
    """Tags as AWS returns them ([{Key, Value}]) or as a dict."""
    t = x.get("Tags", [])
    return t if isinstance(t, dict) else {kv["Key"]: kv["Value"] for kv in t}


def st_v(st, v):
    return [x for x in st["volumes"] if x["VolumeId"] == v["VolumeId"]][0]


def vol_matches(v, flt):
    for k, vals in flt.items():
        if k.startswith("tag:"):
            have = tags_of(v).get(k[4:])
        elif k == "availability-zone":
            have = v["AvailabilityZone"]
        elif k == "status":
            have = v["State"]
        elif k == "attachment.instance-id":
            have = v.get("InstanceId")
        elif k == "volume-id":
            have = v["VolumeId"]
        else:
            raise SystemExit(f"fake aws: unknown filter {k}")
        if have not in vals:
            return False
    return True


def aws(st, argv):
    svc, op = argv[0], argv[1]
    me = st["instance"]
    if op in st.get("fail_api", []):
        fail("RequestLimitExceeded", "Request limit exceeded.")
    if (svc, op) == ("ec2", "describe-addresses"):
        st["describes"] = st.get("describes", 0) + 1
        fe = st.get("free_eip_after")
        if fe and st["describes"] > fe[0]:
            del st["free_eip_after"]          # once
            for a in st["addresses"]:
                if a["AllocationId"] == fe[1]:
                    a.pop("InstanceId", None)
                    a.pop("AssociationId", None)
        flt = filters(argv)
        addrs = [a for a in st["addresses"]
                 if all(tags_of(a).get(k[4:]) in v for k, v in flt.items())]
        return {"Addresses": addrs}
    if (svc, op) == ("ec2", "associate-address"):
        alloc = arg(argv, "--allocation-id")
        a = [x for x in st["addresses"] if x["AllocationId"] == alloc][0]
        if alloc in st.get("steal_eip", []):
            st["steal_eip"].remove(alloc)
            a["InstanceId"], a["AssociationId"] = "i-other", "eipassoc-other"
        if a.get("AssociationId") and "--no-allow-reassociation" in argv:
            fail("Resource.AlreadyAssociated", f"{alloc} is already associated")
        a["InstanceId"], a["AssociationId"] = arg(argv, "--instance-id"), "eipassoc-" + me
        return {"AssociationId": a["AssociationId"]}
    if (svc, op) == ("ec2", "describe-volumes"):
        out = []
        for v in st["volumes"]:
            if vol_matches(v, filters(argv)):
                v = {k: x for k, x in v.items() if k not in ("InstanceId", "fs", "data")}
                v["Tags"] = [{"Key": k, "Value": x} for k, x in tags_of(v).items()]
                if st_v(st, v).get("InstanceId"):
                    v["Attachments"] = [{"InstanceId": st_v(st, v)["InstanceId"],
                                         "State": "attached"}]
                out.append(v)
        return {"Volumes": out}
    if (svc, op) == ("ec2", "describe-instances"):
        iid = arg(argv, "--instance-ids")
        state = st.get("instances", {}).get(iid, "running")
        return {"Reservations": [{"Instances": [{"InstanceId": iid,
                                                  "State": {"Name": state}}]}]}
    if (svc, op) == ("ec2", "create-volume"):
        vid = "vol-%017x" % (len(st["volumes"]) + len(st.get("deleted_volumes", [])) + 0xa0)
        v = {"VolumeId": vid, "AvailabilityZone": arg(argv, "--availability-zone"),
             "State": "available", "Tags": tag_spec(arg(argv, "--tag-specifications")),
             "Size": int(arg(argv, "--size")), "Encrypted": "--encrypted" in argv}
        snap = arg(argv, "--snapshot-id")
        if snap:
            s = [x for x in st.get("snapshots", []) if x["SnapshotId"] == snap][0]
            if s["State"] != "completed":
                fail("IncorrectState", f"{snap} is not completed")
            v["SnapshotId"] = snap
            for k in ("fs", "data"):           # the file system comes with it
                if k in s:
                    v[k] = s[k]
        st["volumes"].append(v)
        return {"VolumeId": vid}
    if (svc, op) == ("ec2", "delete-volume"):
        vid = arg(argv, "--volume-id")
        v = [x for x in st["volumes"] if x["VolumeId"] == vid][0]
        if v["State"] != "available":
            fail("VolumeInUse", f"{vid} is attached")
        st["volumes"].remove(v)
        st.setdefault("deleted_volumes", []).append(vid)
        return None
    if (svc, op) == ("ec2", "create-snapshot"):
        vid = arg(argv, "--volume-id")
        v = [x for x in st["volumes"] if x["VolumeId"] == vid][0]
        sid = "snap-%017x" % (len(st.setdefault("snapshots", [])) + 0x50)
        s = {"SnapshotId": sid, "VolumeId": vid, "State": "pending", "VolumeSize": v["Size"],
             "Tags": tag_spec(arg(argv, "--tag-specifications"))}
        for k in ("fs", "data"):
            if k in v:
                s[k] = v[k]
        st["snapshots"].append(s)
        return {"SnapshotId": sid, "State": "pending"}
    if (svc, op) == ("ec2", "describe-snapshots"):
        flt = filters(argv)
        out = []
        for x in st.get("snapshots", []):
            if all(tags_of(x).get(k[4:]) in vals for k, vals in flt.items()):
                x = {k: y for k, y in x.items() if k not in ("fs", "data")}
                x["Tags"] = [{"Key": k, "Value": y} for k, y in tags_of(x).items()]
                out.append(x)
        return {"Snapshots": out}
    if (svc, op) == ("ec2", "delete-snapshot"):
        sid = arg(argv, "--snapshot-id")
        st["snapshots"] = [x for x in st.get("snapshots", []) if x["SnapshotId"] != sid]
        st.setdefault("deleted_snapshots", []).append(sid)
        return None
    if (svc, op) in (("ec2", "create-tags"), ("ec2", "delete-tags")):
        rid = arg(argv, "--resources")
        things = [x for x in st["volumes"] if x["VolumeId"] == rid] + \
            [x for x in st.get("snapshots", []) if x["SnapshotId"] == rid]
        if not things:
            fail("InvalidVolume.NotFound", rid)
        tags = tags_of(things[0])
        for t in argv[argv.index("--tags") + 1:]:
            if t.startswith("--"):
                break
            kv = dict(p.split("=", 1) for p in t.split(","))
            if op == "create-tags":
                tags[kv["Key"]] = kv["Value"]
            else:
                tags.pop(kv["Key"], None)
        things[0]["Tags"] = tags
        return None
    if svc == "dynamodb":
        return dynamodb(st, op, argv)
    if (svc, op) == ("cloudwatch", "put-metric-data"):
        st.setdefault("metrics", []).append(
            [arg(argv, "--namespace"), arg(argv, "--metric-name"), arg(argv, "--dimensions"),
             float(arg(argv, "--value"))])
        return None
    if (svc, op) == ("ec2", "attach-volume"):
        vid = arg(argv, "--volume-id")
        v = [x for x in st["volumes"] if x["VolumeId"] == vid][0]
        if vid in st.get("steal_volume", []):
            st["steal_volume"].remove(vid)
            v["State"], v["InstanceId"] = "in-use", "i-other"
        if v["State"] != "available":
            fail("VolumeInUse", f"{vid} is already attached to an instance")
        if v["AvailabilityZone"] != st["az"]:
            fail("InvalidVolume.ZoneMismatch", f"{vid} is not in the instance's zone")
        v["State"], v["InstanceId"] = "in-use", arg(argv, "--instance-id")
        return {"State": "attaching"}
    if (svc, op) == ("ec2", "detach-volume"):
        v = [x for x in st["volumes"] if x["VolumeId"] == arg(argv, "--volume-id")][0]
        if v.get("InstanceId") != me:
            fail("IncorrectState", "not attached here")
        v["State"] = "available"
        del v["InstanceId"]
        return {"State": "detaching"}
    if (svc, op) == ("ec2", "wait"):
        if argv[2] == "snapshot-completed":
            if st.get("stuck_snapshots"):         # e.g. the volume's AZ is down
                fail("Waiter", "SnapshotCompleted failed: Max attempts exceeded")
            for x in st.get("snapshots", []):
                if x["SnapshotId"] == arg(argv, "--snapshot-ids"):
                    x["State"] = "completed"
        # a dying instance's volume detaches while we wait
        if argv[2] == "volume-available":
            for v in st["volumes"]:
                if v["VolumeId"] == arg(argv, "--volume-ids") and v.get("InstanceId") and \
                        st.get("instances", {}).get(v["InstanceId"]) in ("shutting-down",
                                                                         "terminated"):
                    v["State"] = "available"
                    del v["InstanceId"]
        return None
    if svc == "autoscaling" and op in ("complete-lifecycle-action",
                                       "record-lifecycle-action-heartbeat"):
        return None
    if (svc, op) == ("cloudformation", "signal-resource"):
        return None
    if (svc, op) == ("s3", "cp"):
        with open(argv[2], "rb") as f:
            data = f.read()
        st.setdefault("s3", {})[argv[3]] = len(data)
        # the object itself, for the test to read: $FAKE_AWS_STATE/../s3/NAME
        bucket = os.path.join(os.path.dirname(STATE), "s3")
        os.makedirs(bucket, exist_ok=True)
        with open(os.path.join(bucket, argv[3].rsplit("/", 1)[1]), "wb") as f:
            f.write(data)
        return None
    if (svc, op) == ("secretsmanager", "get-secret-value"):
        sid = arg(argv, "--secret-id")
        if sid not in st["secrets"]:
            fail("ResourceNotFoundException", sid)
        return {"ARN": sid, "SecretString": st["secrets"][sid]}
    raise SystemExit(f"fake aws: unsupported {svc} {op}")


def tag_spec(spec):
    """--tag-specifications ResourceType=X,Tags=[{Key=a,Value=b},...] -> dict"""
    return dict(kv.split(",Value=") for kv in
                spec.split("Tags=[{", 1)[1].rstrip("}]").replace("Key=", "").split("},{"))


# The claims of mxgate-aws-boot's adoption (one DynamoDB table, key VolumeId):
# the fake evaluates exactly the expressions the script sends, or refuses.
LOCK_TAKE = "attribute_not_exists(VolumeId) OR (#p = :copying AND (#a = :me OR #u < :now))"
LOCK_DONE = "#a = :me"


def dynamodb(st, op, argv):
    locks = st.setdefault("locks", {})
    values = json.loads(arg(argv, "--expression-attribute-values", "{}"))
    plain = {k: list(v.values())[0] for k, v in values.items()}
    if op == "put-item":
        item = {k: list(v.values())[0] for k, v in json.loads(arg(argv, "--item")).items()}
        vid = item["VolumeId"]
        if vid in st.get("steal_lock", {}):       # another adopter, just before us
            locks[vid] = {"VolumeId": vid, "Adopter": st["steal_lock"].pop(vid),
                          "Phase": "copying", "Until": "9999999999"}
        if arg(argv, "--condition-expression") != LOCK_TAKE:
            raise SystemExit("fake dynamodb: unknown condition")
        have = locks.get(vid)
        if have is not None and not (have["Phase"] == plain[":copying"] and (
                have["Adopter"] == plain[":me"] or int(have["Until"]) < int(plain[":now"]))):
            fail("ConditionalCheckFailedException", "The conditional request failed")
        locks[vid] = item
        return {}
    vid = json.loads(arg(argv, "--key"))["VolumeId"]["S"]
    if op == "update-item":
        if arg(argv, "--condition-expression") != LOCK_DONE or \
                arg(argv, "--update-expression") != "SET #p = :done, NewVolume = :new":
            raise SystemExit("fake dynamodb: unknown expression")
        have = locks.get(vid)
        if have is None or have["Adopter"] != plain[":me"]:
            fail("ConditionalCheckFailedException", "The conditional request failed")
        have.update(Phase=plain[":done"], NewVolume=plain[":new"])
        return {}
    if op == "delete-item":
        locks.pop(vid, None)
        return {}
    raise SystemExit(f"fake dynamodb: unsupported {op}")


def device(st, vid):
    return "nvme%dn1" % (1 + [v["VolumeId"] for v in st["volumes"]].index(vid))


def main():
    prog = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    with open(STATE + ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        with open(STATE + ".log", "a") as log:
            log.write(json.dumps([prog] + argv) + "\n")
        st = load()
        out, rc = None, 0
        me = st["instance"]
        if prog == "aws":
            try:
                out = aws(st, argv)
            except AwsError as e:   # the state changes before the error stay
                print(e, file=sys.stderr)
                rc = 254
        elif prog == "lsblk":
            lines = ["nvme0n1 vol0root"]
            lines += [f"{device(st, v['VolumeId'])} {v['VolumeId'].replace('-', '')}"
                      for v in st["volumes"] if v.get("InstanceId") == me]
            print("\n".join(lines))
        elif prog in ("blkid", "mkfs.ext4"):
            dev = argv[-1]
            vols = [v for v in st["volumes"] if v.get("InstanceId") == me
                    and "/dev/" + device(st, v["VolumeId"]) == dev]
            if not vols:
                print(f"{prog}: {dev}: no such device", file=sys.stderr)
                rc = 2 if prog == "blkid" else 1
            elif prog == "blkid":
                if vols[0].get("fs"):
                    print(vols[0]["fs"])
                else:
                    rc = 2
            else:
                vols[0]["fs"] = "ext4"
        elif prog == "mount":
            dev, where = argv[-2], argv[-1]
            if dev in st.get("broken_devices", []):
                print(f"mount: {where}: wrong fs type, bad option, bad superblock", file=sys.stderr)
                rc = 32
            else:
                st.setdefault("mounts", {})[where] = dev
        elif prog == "mountpoint":
            rc = 0 if argv[-1] in st.get("mounts", {}) else 32
        elif prog == "systemctl":
            svcs = st.setdefault("services", {})
            unit = argv[-1]
            if argv[0] == "start":
                if st.get("fail_start"):
                    rc = 1
                else:
                    svcs[unit] = True
            elif argv[0] == "stop":
                for u in argv[1:]:
                    svcs[u] = False
            elif argv[0] in ("restart", "try-restart"):
                if argv[0] == "restart" or svcs.get(unit):
                    svcs[unit] = True
                    st.setdefault("restarts", {}).setdefault(unit, 0)
                    st["restarts"][unit] += 1
            elif argv[0] == "is-active":
                rc = 0 if svcs.get(unit) else 3
            elif argv[0] == "reload":
                rc = 0 if svcs.get(unit) else 1
        elif prog == "umount":
            if st.get("mounts", {}).pop(argv[-1], None) is None:
                rc = 32
        elif prog == "mxgate":
            counts = st.get("queue_counts", [])
            if argv[0] != "status" or not st.get("services", {}).get("mxgate.service"):
                print("mxgate: cannot connect to the control socket", file=sys.stderr)
                rc = 1
            else:
                n = counts.pop(0) if len(counts) > 1 else counts[0]
                st["queue_counts"] = counts
                # n: every message deliverable, or [all, deliverable]
                total, deliverable = n if isinstance(n, list) else (n, n)
                print(f"state: running\nqueue_messages: {total}\n"
                      f"queue_deliverable: {deliverable}")
        elif prog == "getent":
            addrs = st.get("dns", {}).get(argv[-1], [])
            if argv[0] != "ahostsv4" or not addrs:
                rc = 2
            else:   # getent prints each address once per socket type
                print("\n".join(f"{a}{' ' * 10}{t}" + (f" {argv[-1]}" if t == "STREAM" else "")
                                for a in addrs for t in ("STREAM", "DGRAM", "RAW")))
        elif prog == "sleep":
            # sleep_effects: state changes made by others while we sleep
            if st.get("sleep_effects"):
                st.update(st["sleep_effects"].pop(0))
        elif prog == "chown":
            pass
        else:
            raise SystemExit(f"fake: unknown program {prog}")
        crash = argv[1] if prog == "aws" else prog
        if crash in st.get("crash_after", []):
            st["crash_after"].remove(crash)
            save(st)
            # power lost right after this call: the script's whole process
            # group dies (the test runs it in a session of its own)
            os.killpg(os.getpgrp(), signal.SIGKILL)
        save(st)
    if out is not None:
        print(json.dumps(out))
    sys.exit(rc)


if __name__ == "__main__":
    main()
