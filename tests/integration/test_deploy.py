"""Issue 7, deploy/: the systemd unit (systemd-analyze verify, security
exposure <= 2.0 in offline mode), the Dockerfile (checked statically: there
is no Docker engine here) and the CloudFormation template (parsed with the
CloudFormation tags; every reference resolves, every parameter is used)."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mxtest import mxgate_bin, source_dir

SRC = source_dir()
UNIT = SRC / "deploy" / "systemd" / "mxgate.service"
DOCKERFILE = SRC / "deploy" / "docker" / "Dockerfile"
TEMPLATE = SRC / "deploy" / "aws" / "mxgate.yaml"
SUBCOMMANDS = {"run", "check-config", "queue", "reload", "status", "dns-records",
               "config-reference", "version", "reopen-logs"}


# ---------------------------------------------------------------- systemd

def unit_for_verify(tmp_path):
    """The unit with its binary path pointing at the built binary (verify
    checks that ExecStart= commands exist)."""
    text = UNIT.read_text().replace("/usr/local/sbin/mxgate", mxgate_bin())
    p = tmp_path / "mxgate.service"
    p.write_text(text)
    return p


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_systemd_unit_verifies(tmp_path):
    p = subprocess.run(["systemd-analyze", "verify", str(unit_for_verify(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "mxgate.service" not in p.stderr, p.stderr   # no warnings about our unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_systemd_unit_exposure(tmp_path):
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                        str(unit_for_verify(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for mxgate\.service: ([0-9.]+)", p.stdout)
    assert m, p.stdout[-2000:] + p.stderr
    assert float(m.group(1)) <= 2.0, p.stdout
    # and the threshold mode agrees (exit status, no parsing)
    t = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                        str(unit_for_verify(tmp_path))], capture_output=True, timeout=60)
    assert t.returncode == 0


def test_systemd_unit_content():
    unit = UNIT.read_text()
    kv = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            kv.setdefault(k, []).append(v)
    assert kv["Type"] == ["notify"]          # sd_notify READY=1 in gw-run.c
    assert kv["User"] != ["root"]
    # reload validates and fails visibly on a broken file (issue 16)
    assert kv["ExecReload"][0].split()[1:] == ["reload", "-c", "/etc/mxgate/mxgate.conf"]
    assert kv["KillSignal"] == ["SIGTERM"]
    assert int(kv["TimeoutStopSec"][0]) > 30  # above the daemon's own grace period
    for exe in kv["ExecStart"] + kv["ExecStartPre"]:
        argv = shlex.split(exe)
        assert argv[1] in SUBCOMMANDS and "-c" in argv, exe


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions():
    """[(INSTRUCTION, args)] with continuation lines joined."""
    out, cur = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        instr, _, args = cur.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
        cur = ""
    return out


def stages():
    st = []
    for instr, args in dockerfile_instructions():
        if instr == "FROM":
            st.append({"from": args, "ins": []})
        else:
            st[-1]["ins"].append((instr, args))
    return st


def test_dockerfile_multistage_debian12_nonroot():
    st = stages()
    assert len(st) >= 2, "multi-stage build expected"
    for s in st:
        image = s["from"].split()[0]
        assert re.match(r"^debian:(12|bookworm)(-slim)?$", image), s["from"]
    final = st[-1]["ins"]
    users = [a for i, a in final if i == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    # the user is created in the image before USER
    assert any(i == "RUN" and f"useradd" in a and user in a for i, a in final)
    # build tools stay in the build stage
    runs = " ".join(a for i, a in final if i == "RUN")
    for tool in ("build-essential", "cmake", "-dev "):
        assert tool not in runs, f"{tool} in the runtime stage"


def test_dockerfile_copy_sources_exist():
    stage_names = {s["from"].split()[-1] for s in stages() if " AS " in s["from"].upper()}
    n = 0
    for instr, args in dockerfile_instructions():
        if instr not in ("COPY", "ADD"):
            continue
        parts = shlex.split(args)
        if any(p.startswith("--from=") for p in parts):
            src_stage = [p for p in parts if p.startswith("--from=")][0].split("=", 1)[1]
            assert src_stage in stage_names, args
            continue
        srcs = [p for p in parts if not p.startswith("--")][:-1]
        for src in srcs:
            assert (SRC / src).exists(), f"COPY source {src} does not exist"
            n += 1
    assert n >= 5


def test_dockerfile_command_matches_cli():
    final = stages()[-1]["ins"]
    entry = [a for i, a in final if i == "ENTRYPOINT"][-1]
    cmd = [a for i, a in final if i == "CMD"][-1]
    import json
    entry, cmd = json.loads(entry), json.loads(cmd)   # exec form
    copied = [shlex.split(a)[-1] for i, a in final if i == "COPY"]
    assert entry[0] in copied, "ENTRYPOINT is not the copied binary"
    assert cmd[0] in SUBCOMMANDS and cmd[0] == "run"
    conf = cmd[cmd.index("-c") + 1]
    assert conf in copied, "the config named in CMD is not in the image"
    # the baked-in config is valid for this binary
    src = [shlex.split(a)[-2] for i, a in final if i == "COPY" and shlex.split(a)[-1] == conf][0]
    p = subprocess.run([mxgate_bin(), "check-config", "-c", str(SRC / src)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    health = [a for i, a in final if i == "HEALTHCHECK"]
    if health:
        assert "status" in health[0]
    exposed = " ".join(a for i, a in final if i == "EXPOSE").split()
    conftext = (SRC / src).read_text()
    for port in exposed:
        assert f":{port}" in conftext, f"EXPOSE {port} but nothing listens there"


def test_dockerfile_runtime_has_every_needed_library():
    """Each DT_NEEDED library of the binary comes from a package the runtime
    stage installs (mapped with ldconfig + dpkg on this Debian 12 host)."""
    if not shutil.which("objdump") or not shutil.which("dpkg"):
        pytest.skip("objdump/dpkg missing")
    runs = " ".join(a for i, a in stages()[-1]["ins"] if i == "RUN")
    od = subprocess.run(["objdump", "-p", mxgate_bin()], capture_output=True, text=True,
                        timeout=30).stdout
    needed = re.findall(r"NEEDED\s+(\S+)", od)
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for lib in needed:
        if lib.startswith(("libc.so", "libm.so", "libpthread", "libdl", "libcrypto",
                           "libasan", "libubsan", "libgcc_s", "libstdc++")):
            continue   # libc6 is in every image; libcrypto comes with libssl3;
            # the sanitizer runtimes only in the ASan test build
        m = re.search(rf"^\s+{re.escape(lib)} \(.*libc6,x86-64.*\) => (\S+)$", cache, re.M)
        if not m:
            continue
        path = str(Path(m.group(1)).resolve())
        q = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if q.returncode != 0:   # merged /usr: dpkg knows the /usr/lib path only
            q = subprocess.run(["dpkg", "-S", path.replace("/usr/lib/", "/lib/")],
                               capture_output=True, text=True)
        pkg = q.stdout.split(":")[0]
        assert pkg and re.search(rf"(^|\s){re.escape(pkg)}(\s|$)", runs), \
            f"{lib} ({pkg}) is not installed in the runtime stage"


# ---------------------------------------------------------------- CloudFormation

class Tag:
    def __init__(self, name, value):
        self.name, self.value = name, value


def cfn_loader():
    class Loader(yaml.SafeLoader):
        pass
    tags = ["Ref", "GetAtt", "Sub", "Join", "Select", "Split", "If", "Equals", "Not", "And",
            "Or", "FindInMap", "Base64", "GetAZs", "ImportValue", "Condition", "Cidr",
            "Transform"]

    def make(tag):
        def construct(loader, node):
            if isinstance(node, yaml.ScalarNode):
                v = loader.construct_scalar(node)
                if tag == "GetAtt":
                    v = v.split(".", 1)
            elif isinstance(node, yaml.SequenceNode):
                v = loader.construct_sequence(node, deep=True)
            else:
                v = loader.construct_mapping(node, deep=True)
            return {("Ref" if tag == "Ref" else "Condition" if tag == "Condition"
                     else "Fn::" + tag): v}
        return construct
    for t in tags:
        Loader.add_constructor("!" + t, make(t))
    return Loader


@pytest.fixture(scope="module")
def template():
    return yaml.load(TEMPLATE.read_text(), Loader=cfn_loader())


PSEUDO = {"AWS::AccountId", "AWS::Region", "AWS::StackName", "AWS::StackId", "AWS::Partition",
          "AWS::URLSuffix", "AWS::NoValue", "AWS::NotificationARNs"}


def walk_refs(node, local=()):
    """Yield (kind, target) for Ref, GetAtt and ${} in Sub."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref":
                yield "Ref", v
            elif k == "Fn::GetAtt":
                yield "GetAtt", v[0] if isinstance(v, list) else v.split(".")[0]
            elif k == "Fn::Sub":
                text, varmap = (v, {}) if isinstance(v, str) else (v[0], v[1])
                for name in re.findall(r"\$\{(?!!)([^}]+)\}", text):
                    if name in varmap:
                        continue
                    yield ("GetAtt", name.split(".")[0]) if "." in name else ("Ref", name)
                yield from walk_refs(varmap)
            else:
                yield from walk_refs(v)
    elif isinstance(node, list):
        for x in node:
            yield from walk_refs(x)


def test_cfn_references_resolve(template):
    params = set(template.get("Parameters", {}))
    res = template["Resources"]
    names = set(res)
    refs = (list(walk_refs(res)) + list(walk_refs(template.get("Outputs", {})))
            + list(walk_refs(template.get("Conditions", {})))
            + list(walk_refs(template.get("Rules", {}))))
    assert refs
    for kind, target in refs:
        if kind == "Ref":
            assert target in params or target in names or target in PSEUDO, f"!Ref {target}"
        else:
            assert target in names, f"!GetAtt {target}"
    for name, r in res.items():
        deps = r.get("DependsOn", [])
        for d in [deps] if isinstance(deps, str) else deps:
            assert d in names, f"{name} DependsOn {d}"
        assert re.match(r"^AWS::[A-Za-z0-9]+::[A-Za-z0-9]+$", r["Type"]), r["Type"]
    used = {t for k, t in refs if k == "Ref"}
    unused = params - used
    assert not unused, f"parameters never used: {unused}"


def test_cfn_outputs(template):
    outs = template.get("Outputs", {})
    for key in ("LoadBalancerDnsName", "GatewayAddress1", "GatewayAddress2",
                "QueueArchiveBucketName"):
        assert key in outs and "Value" in outs[key], key


def test_cfn_topology(template):
    res = template["Resources"]
    by_type = {}
    for name, r in res.items():
        by_type.setdefault(r["Type"], []).append((name, r["Properties"]))
    lb = by_type["AWS::ElasticLoadBalancingV2::LoadBalancer"][0][1]
    assert lb["Type"] == "network"
    listener = by_type["AWS::ElasticLoadBalancingV2::Listener"][0][1]
    assert listener["Port"] == 25 and listener["Protocol"] == "TCP"
    tg = by_type["AWS::ElasticLoadBalancingV2::TargetGroup"][0][1]
    attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    assert attrs["proxy_protocol_v2.enabled"] == "true"
    # the gateways must see the NLB as the peer to trust its PROXY header
    assert attrs["preserve_client_ip.enabled"] == "false"
    # SES: allow each gateway EIP, block everyone else
    filters = [p["Filter"]["IpFilter"] for _, p in by_type["AWS::SES::ReceiptFilter"]]
    eips = [n for n, _ in by_type["AWS::EC2::EIP"]]
    allows = [f for f in filters if f["Policy"] == "Allow"]
    assert len(allows) == len(eips) >= 1
    for eip in eips:
        assert any(eip in repr(f["Cidr"]) for f in allows), f"no allow filter for {eip}"
    assert {"Policy": "Block", "Cidr": "0.0.0.0/0"} in filters
    # Route 53 MX pointing at the MX host, which is an alias of the NLB
    rrs = [p for _, p in by_type["AWS::Route53::RecordSet"]]
    mx = [p for p in rrs if p["Type"] == "MX"]
    assert mx and "MxHostName" in repr(mx[0]["ResourceRecords"])
    alias = [p for p in rrs if p["Type"] == "A" and "AliasTarget" in p]
    assert alias and "LoadBalancer" in repr(alias[0]["AliasTarget"])
    # an Auto Scaling group behind the target group, with a drain hook
    asg = by_type["AWS::AutoScaling::AutoScalingGroup"][0][1]
    assert asg["TargetGroupARNs"]
    hook = by_type["AWS::AutoScaling::LifecycleHook"][0][1]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"


def test_cfn_user_data_config_is_valid(template, tmp_path):
    """The config written by the user data passes check-config (with the
    stack's substitutions filled in with plausible values)."""
    lt = [r for r in template["Resources"].values()
          if r["Type"] == "AWS::EC2::LaunchTemplate"][0]
    sub = lt["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    script = sub[0]
    assert "trusted_proxies = ${TrustedProxies}" in script
    assert "inbound-smtp.${AWS::Region}.amazonaws.com:25" in script
    conf = script.split("<<CONF\n", 1)[1].split("\nCONF\n", 1)[0]
    values = {"MxHostName": "mx.example.com", "TrustedProxies": "10.0.0.0/24, 10.0.1.0/24",
              "DomainName": "example.com", "AWS::Region": "us-east-1",
              "DmarcEnforcement": "monitor"}
    conf = re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], conf)
    # certificates do not exist here; queue and socket go to tmp
    conf = (conf.replace("/etc/mxgate/tls/fullchain.pem", str(tmp_path / "c.pem"))
            .replace("/etc/mxgate/tls/privkey.pem", str(tmp_path / "k.pem"))
            .replace("/var/spool/mxgate", str(tmp_path / "q"))
            .replace("/etc/mxgate/recipients", str(tmp_path / "recipients"))
            .replace("listen = 0.0.0.0:25", "listen = 127.0.0.1:25"))
    # as user data leaves it before the first WorkMail list: empty
    (tmp_path / "recipients").write_text("")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(tmp_path / "c.pem"), "-days", "2", "-subj", "/CN=mx.example.com"],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "m.conf").write_text(conf)
    p = subprocess.run([mxgate_bin(), "check-config", "-c", str(tmp_path / "m.conf")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr + conf
    # the embedded unit equals deploy/systemd/mxgate.service without comments
    unit = script.split("mxgate.service <<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0]
    want = [ln for ln in UNIT.read_text().splitlines() if ln and not ln.startswith("#")]
    assert unit.splitlines() == want


def test_cfn_recipient_verification_on_by_default(template):
    """Issue 11: with the defaults the stack refuses to deploy without the
    WorkMail recipient list (SES inbound accepts every address, so nothing
    else refuses unknown users): a Rule demands WorkMailOrganizationId or an
    explicit AcceptUnknownRecipients = yes, and the list is what the config
    reads."""
    params = template["Parameters"]
    assert params["WorkMailOrganizationId"]["Default"] == ""
    assert re.fullmatch(params["WorkMailOrganizationId"]["AllowedPattern"],
                        "m-" + "0123456789abcdef" * 2)
    assert not re.fullmatch(params["WorkMailOrganizationId"]["AllowedPattern"], "my-org")
    assert params["AcceptUnknownRecipients"]["Default"] == "no"
    rules = template.get("Rules", {})
    [rule] = [r for r in rules.values()
              if r.get("RuleCondition") == {"Fn::Equals": [{"Ref": "WorkMailOrganizationId"}, ""]}]
    assert {"Fn::Equals": [{"Ref": "AcceptUnknownRecipients"}, "yes"]} in \
        [a["Assert"] for a in rule["Assertions"]]
    assert "recipients_file = /etc/mxgate/recipients" in TEMPLATE_TEXT


def test_aws_readme_mentions_essentials():
    text = (SRC / "deploy" / "aws" / "README.md").read_text()
    for s in ("Inbound DMARC enforcement", "off", "proxy protocol", "trusted_proxies",
              "drain", "Auto Scaling"):
        assert s.lower() in text.lower(), s


# ------------------------------------------------- CloudFormation, issue 16

TEMPLATE_TEXT = TEMPLATE.read_text()
BOOT = SRC / "deploy" / "aws" / "mxgate-aws-boot"

# Structural validation (always runs; cfn-lint below when installed): every
# resource type is one this template may use, with its required properties
# (from the CloudFormation resource specification) and only attributes that
# exist for !GetAtt.
KNOWN_TYPES = {
    "AWS::EC2::EIP": ({"Domain"}, {"PublicIp", "AllocationId"}),
    "AWS::SES::ReceiptFilter": ({"Filter"}, set()),
    "AWS::EC2::SecurityGroup": ({"GroupDescription"}, {"GroupId", "VpcId"}),
    "AWS::ElasticLoadBalancingV2::LoadBalancer": (set(), {"DNSName", "CanonicalHostedZoneID",
                                                          "LoadBalancerArn"}),
    "AWS::ElasticLoadBalancingV2::TargetGroup": (set(), {"TargetGroupArn"}),
    "AWS::ElasticLoadBalancingV2::Listener": ({"DefaultActions", "LoadBalancerArn"},
                                              {"ListenerArn"}),
    "AWS::Route53::RecordSet": ({"Name", "Type"}, set()),
    "AWS::S3::Bucket": (set(), {"Arn", "DomainName"}),
    "AWS::IAM::Role": ({"AssumeRolePolicyDocument"}, {"Arn", "RoleId"}),
    "AWS::IAM::InstanceProfile": ({"Roles"}, {"Arn"}),
    "AWS::EC2::LaunchTemplate": ({"LaunchTemplateData"}, {"LatestVersionNumber",
                                                          "DefaultVersionNumber"}),
    "AWS::AutoScaling::AutoScalingGroup": ({"MaxSize", "MinSize"}, set()),
    "AWS::AutoScaling::LifecycleHook": ({"AutoScalingGroupName", "LifecycleTransition"}, set()),
}


def resources_of(template, rtype):
    return [(n, r) for n, r in template["Resources"].items() if r["Type"] == rtype]


def test_cfn_structure(template):
    res = template["Resources"]
    conds = set(template.get("Conditions", {}))
    maps = template.get("Mappings", {})
    for name, r in res.items():
        assert r["Type"] in KNOWN_TYPES, f"{name}: unknown type {r['Type']}"
        required, _ = KNOWN_TYPES[r["Type"]]
        missing = required - set(r.get("Properties", {}))
        assert not missing, f"{name} lacks {missing}"
        if "Condition" in r:
            assert r["Condition"] in conds, name
    for node in (res, template.get("Outputs", {})):
        for kind, target in walk_getatts(node):
            rtype = res[target[0]]["Type"]
            assert target[1] in KNOWN_TYPES[rtype][1], f"!GetAtt {'.'.join(target)}"
    for key, args in walk_fn(res, "Fn::FindInMap"):
        assert args[0] in maps, args
    for key, args in walk_fn(template, "Fn::If"):
        assert args[0] in conds, args


def walk_fn(node, fn):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == fn:
                yield k, v
            yield from walk_fn(v, fn)
    elif isinstance(node, list):
        for x in node:
            yield from walk_fn(x, fn)


def walk_getatts(node):
    for _, v in walk_fn(node, "Fn::GetAtt"):
        yield "GetAtt", v
    for _, v in walk_fn(node, "Fn::Sub"):
        text = v if isinstance(v, str) else v[0]
        for name in re.findall(r"\$\{(?!!)([^}]+)\}", text):
            if "." in name:
                yield "GetAtt", name.split(".", 1)


def cfn_lint_cmd():
    exe = shutil.which("cfn-lint")
    return [exe] if exe else None


@pytest.mark.skipif(cfn_lint_cmd() is None, reason="cfn-lint not installed (not a Debian 12 package)")
def test_cfn_lint(tmp_path):
    """AWS's maintained linter (cfn-lint, PyPI; it ships the current resource
    specification) accepts the template, and rejects a broken copy (so the
    run is real): a property that does not exist and a bad GetAtt."""
    p = subprocess.run(cfn_lint_cmd() + ["--", str(TEMPLATE)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEMPLATE_TEXT.replace("      IpAddressType: !If", "      IpAdressType: !If")
                   .replace("!GetAtt LoadBalancer.DNSName", "!GetAtt LoadBalancer.DnsName"))
    p = subprocess.run(cfn_lint_cmd() + ["--", str(bad)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0
    assert "IpAdressType" in p.stdout and "DnsName" in p.stdout, p.stdout


def test_cfn_group_bounds_and_rolling_update(template):
    """A rolling update starts the new instance before retiring the old one,
    also with one instance: MaxSize = GatewayCount + 1 for every allowed
    count, MinInstancesInService < MaxSize, and it waits for the instance's
    own signal (sent by mxgate-aws-boot once mxgate runs)."""
    (_, asg), = resources_of(template, "AWS::AutoScaling::AutoScalingGroup")
    props = asg["Properties"]
    counts = template["Parameters"]["GatewayCount"]["AllowedValues"]
    assert props["MinSize"] == {"Ref": "GatewayCount"}
    assert props["DesiredCapacity"] == {"Ref": "GatewayCount"}
    mapname, key, attr = props["MaxSize"]["Fn::FindInMap"]
    assert key == {"Ref": "GatewayCount"}
    eips = resources_of(template, "AWS::EC2::EIP")
    for n in counts:
        mx = template["Mappings"][mapname][str(n)][attr]
        assert mx == int(n) + 1
        assert len(eips) >= mx, "every instance the group may run needs an Elastic IP"
    ru = asg["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert ru["MaxBatchSize"] == 1 and ru["MinInstancesInService"] == {"Ref": "GatewayCount"}
    assert ru["WaitOnResourceSignals"] is True
    assert asg["CreationPolicy"]["ResourceSignal"]["Count"] == {"Ref": "GatewayCount"}
    # the launch hook is part of the group (so the first instances wait too)
    hooks = props["LifecycleHookSpecificationList"]
    launch = [h for h in hooks if h["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"]
    assert launch and launch[0]["DefaultResult"] == "ABANDON"
    assert launch[0]["LifecycleHookName"] == {"Fn::Sub": "${AWS::StackName}-launch"}
    # the stack signals go to this resource
    ud = user_data(template)
    (asg_name, _), = resources_of(template, "AWS::AutoScaling::AutoScalingGroup")
    assert f"CFN_RESOURCE={asg_name}\n" in ud
    assert "LAUNCH_HOOK=${AWS::StackName}-launch\n" in ud
    assert "ASG=${AWS::StackName}-gateways\n" in ud
    assert props["AutoScalingGroupName"] == {"Fn::Sub": "${AWS::StackName}-gateways"}


def user_data(template):
    (_, lt), = resources_of(template, "AWS::EC2::LaunchTemplate")
    return lt["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"][0]


def test_cfn_user_data_boot_sequence(template):
    """mxgate is started by mxgate-aws-boot (after the EIP and the queue
    volume), never enabled on its own; the script comes from next to the
    binary; its settings are all written; user data fits EC2's 16 KB."""
    ud = user_data(template)
    assert len(ud.encode()) < 16384
    assert "mxgate-aws-boot" in ud and "${!BIN_URL%/*}" in ud
    assert not re.search(r"systemctl enable[^\n]*\bmxgate(\.service)?\s*$", ud, re.M)
    assert not re.search(r"systemctl (start|restart)[^\n]*\bmxgate(\.service)?\s*$", ud, re.M)
    assert "systemctl start --no-block mxgate-aws-boot.service\n" in ud
    assert ud.rstrip().endswith("systemctl start --no-block mxgate-aws-boot.service")
    assert re.search(r"systemctl enable mxgate-aws-boot.service", ud)
    env = ud.split("/etc/mxgate/aws.env <<ENV\n", 1)[1].split("\nENV\n", 1)[0]
    keys = {ln.split("=", 1)[0] for ln in env.splitlines()}
    script = BOOT.read_text()
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", script))
    defaulted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", script))
    assigned = set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)=", script, re.M))
    from_env = used - defaulted - assigned
    assert {"STACK", "REGION", "TLS_CERT_SECRET", "ASG"} <= from_env
    assert from_env <= keys, f"aws.env lacks {from_env - keys}"
    # timers for check-eip and refresh-cert
    assert "check-eip:" in ud and "refresh-cert:" in ud
    # the config line that set_helo rewrites
    assert "\nhostname = ${MxHostName}\n" in ud
    assert "authserv_id = ${MxHostName}" in ud      # one authserv-id for all gateways


def test_cfn_role_allows_every_call_of_the_boot_script(template):
    (_, role), = resources_of(template, "AWS::IAM::Role")
    actions = set()
    for pol in role["Properties"]["Policies"]:
        for st in pol["PolicyDocument"]["Statement"]:
            a = st["Action"]
            actions.update([a] if isinstance(a, str) else a)
    calls = set(re.findall(r"\baws ([a-z0-9]+) ([a-z-]+)", BOOT.read_text()))
    assert len(calls) >= 9
    for svc, op in calls:
        if op == "wait":
            action = "ec2:DescribeVolumes"
        elif (svc, op) == ("s3", "cp"):
            action = "s3:PutObject"
        else:
            action = f"{svc}:" + "".join(w.capitalize() for w in op.split("-"))
        assert action in actions, f"aws {svc} {op} needs {action}"


def test_cfn_mta_sts_ipv6_and_helo_names(template):
    res = template["Resources"]
    listeners = {r["Properties"]["Port"]: r["Properties"]
                 for _, r in resources_of(template, "AWS::ElasticLoadBalancingV2::Listener")}
    assert set(listeners) == {25, 443}
    tg443 = res[listeners[443]["DefaultActions"][0]["TargetGroupArn"]["Ref"]]["Properties"]
    attrs = {a["Key"]: a["Value"] for a in tg443["TargetGroupAttributes"]}
    assert tg443["Port"] == 443 and attrs["proxy_protocol_v2.enabled"] == "false"
    (_, asg), = resources_of(template, "AWS::AutoScaling::AutoScalingGroup")
    assert {"Ref": listeners[443]["DefaultActions"][0]["TargetGroupArn"]["Ref"]} \
        in asg["Properties"]["TargetGroupARNs"]
    ingress = res["GatewaySecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert any(i["FromPort"] == 443 for i in ingress)
    assert "[mta_sts]\nmx_hosts = ${MxHostName}\nlisten = 0.0.0.0:443\n" in user_data(template)
    rrs = [(n, r) for n, r in resources_of(template, "AWS::Route53::RecordSet")]
    names = {}
    for n, r in rrs:
        names.setdefault(r["Properties"]["Name"]["Fn::Sub"], []).append(r)
    sts = names["mta-sts.${DomainName}."]
    assert {r["Properties"]["Type"] for r in sts} == {"A", "AAAA"}
    # IPv6 as an option: dual-stack NLB and AAAA records under one condition
    lb = resources_of(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")[0][1]
    assert lb["Properties"]["IpAddressType"] == {"Fn::If": ["Ipv6", "dualstack", "ipv4"]}
    for n, r in rrs:
        if r["Properties"]["Type"] == "AAAA":
            assert r.get("Condition") == "Ipv6", n
    assert {r["Properties"]["Type"] for r in names["${MxHostName}."]} == {"A", "AAAA"}
    # HELO names: each EIP's mxgate-helo name has an A record to that EIP,
    # an SPF record allowing exactly it, and a PTR command in the outputs
    ptr = template["Outputs"]["GatewayPtrCommands"]["Value"]["Fn::Sub"]
    for eip, r in resources_of(template, "AWS::EC2::EIP"):
        tags = {t["Key"]: t["Value"] for t in r["Properties"]["Tags"]}
        helo = tags["mxgate-helo"]["Fn::Sub"]
        recs = {x["Properties"]["Type"]: x["Properties"] for x in names[helo + "."]}
        assert recs["A"]["ResourceRecords"] == [{"Ref": eip}]
        assert recs["TXT"]["ResourceRecords"] == [{"Fn::Sub": f'"v=spf1 ip4:${{{eip}}} -all"'}]
        assert f"${{{eip}.AllocationId}} --domain-name {helo}" in ptr


def test_aws_readme_documents_failure_cases():
    text = (SRC / "deploy" / "aws" / "README.md").read_text()
    for s in ("instance dies", "AZ", "volume fails", "Elastic IP", "mxgate-aws-boot",
              "mta-sts", "PTR", "EnableIpv6", "refresh-cert", "cfn-lint"):
        assert s.lower() in text.lower(), s


def test_cfn_user_data_is_valid_bash(template, tmp_path):
    """The user data after Fn::Sub (${X} filled in, ${!X} -> ${X}) parses
    as bash (heredocs included) and passes shellcheck."""
    values = {"AWS::Region": "eu-west-1", "AWS::StackName": "mxgate-prod",
              "MxgateBinaryUrl": "s3://art/mxgate/0.1/mxgate", "QueueVolumeSize": "20",
              "TlsCertSecretArn": "arn:c", "TlsKeySecretArn": "arn:k",
              "MxHostName": "mx.example.com", "TrustedProxies": "10.0.0.0/24",
              "DomainName": "example.com", "DmarcEnforcement": "monitor",
              "QueueArchiveBucket": "bucket", "MaxDrainMinutes": "120",
              "WorkMailOrganizationId": "m-0123456789abcdef"}
    text = re.sub(r"\$\{(?!!)([^}]+)\}", lambda m: values[m.group(1)], user_data(template))
    text = text.replace("${!", "${")
    assert "${" not in text.replace("${BIN_URL%/*}", "").replace("${f%%:*}", "") \
        .replace("${f#*:}", "").replace("${job%:*}", "").replace("${job#*:}", ""), \
        "an unresolved substitution"
    p = tmp_path / "ud.sh"
    p.write_text(text)
    r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "ExecStart=/usr/local/sbin/mxgate-aws-boot drain\n" in text
    r = subprocess.run(["bash", "-n", str(BOOT)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # the timers' loop writes units for both jobs with their interval
    assert "for job in check-eip:1min refresh-cert:1h; do" in text
    if shutil.which("shellcheck"):
        for f in (p,):
            r = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", str(f)], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0, r.stdout
