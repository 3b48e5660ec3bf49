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

import cfnspec
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
              "DmarcEnforcement": "monitor", "StateRedisLine": "redis = redis://127.0.0.1:6379"}
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

# Every resource is checked against AWS's current CloudFormation resource
# database (npm @aws-cdk/aws-service-spec, installed by `make deps-test`;
# tests/integration/cfnspec.py): type, property names at every depth,
# required properties, basic value shapes, !GetAtt attributes.  cfn-lint
# runs on top where it is installed.
TEMPLATES = [TEMPLATE, SRC / "deploy" / "aws" / "workmail-junk" / "template.yaml"]


@pytest.fixture(scope="module")
def cfn_spec():
    path = cfnspec.db_path()
    if not path.is_file():
        pytest.fail(f"{cfnspec.PACKAGE} is not installed ({path}): `make deps-test` "
                    "installs it with npm into MXGATE_NPM_DIR", pytrace=False)
    return cfnspec.Spec(path)


def test_cfn_spec_is_the_pinned_one(cfn_spec):
    want = re.search(r"^CFN_SPEC_VERSION\s*\?=\s*(\S+)$", (SRC / "Makefile").read_text(), re.M)
    assert want and cfn_spec.version == want.group(1), \
        f"installed {cfnspec.PACKAGE} {cfn_spec.version}, Makefile pins {want and want.group(1)}"
    assert len(cfn_spec.resources) > 1000      # the whole database, not a stub


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.parent.name + "/" + p.name)
def test_cfn_resources_match_the_aws_spec(cfn_spec, path):
    tpl = yaml.load(path.read_text(), Loader=cfn_loader())
    assert tpl["Resources"]
    problems = cfnspec.validate(cfn_spec, tpl)
    assert not problems, "\n".join(problems)


# (text replaced, replacement, the problem expected)
BROKEN = [
    ("      IpAddressType: !If", "      IpAdressType: !If", "unknown property IpAdressType"),
    ("              SSEAlgorithm: AES256", "              SSEAlgoritm: AES256",
     "unknown property SSEAlgoritm"),
    ("          HttpTokens: required", "          HttpToken: required",
     "unknown property HttpToken"),
    ("      GroupDescription: mxgate instances - SMTP and health checks from the NLB only\n",
     "", "required property GroupDescription missing"),
    ("      Subnets: !Ref PublicSubnetIds", "      Subnets: subnet-1", "Subnets: expects a list"),
    ("      LoadBalancerAttributes:\n        - Key:", "      LoadBalancerAttributes:\n          Key:",
     "LoadBalancerAttributes: expects a list"),
    ("      Port: 25\n      DefaultActions", "      Port: [25]\n      DefaultActions",
     "Port: expects a integer"),
    ("      HealthCheckIntervalSeconds: 10\n      HealthyThresholdCount: 2\n"
     "      UnhealthyThresholdCount: 2\n      TargetGroupAttributes:\n"
     "        - Key: proxy_protocol_v2.enabled\n          Value: \"true\"",
     "      HealthCheckIntervalSeconds: ten\n      HealthyThresholdCount: 2\n"
     "      UnhealthyThresholdCount: 2\n      TargetGroupAttributes:\n"
     "        - Key: proxy_protocol_v2.enabled\n          Value: \"true\"",
     "HealthCheckIntervalSeconds: expects a integer"),
    ("!GetAtt LoadBalancer.DNSName", "!GetAtt LoadBalancer.DnsName",
     "LoadBalancer has no attribute DnsName"),
    ("${GatewayEip1.PublicIp}/32", "${GatewayEip1.PublicIP}/32", "has no attribute PublicIP"),
    ("    Type: AWS::S3::Bucket\n", "    Type: AWS::S3::Buckets\n",
     "unknown resource type AWS::S3::Buckets"),
]


@pytest.mark.parametrize("old,new,want", BROKEN, ids=[w for _, _, w in BROKEN])
def test_cfn_spec_check_finds_a_broken_template(cfn_spec, old, new, want):
    """The same check rejects a copy of the template with one mistake (so
    a pass above is real): a misspelt optional property, at the top and
    nested, a missing required one, a wrong shape, a bad !GetAtt."""
    assert old in TEMPLATE_TEXT, old
    tpl = yaml.load(TEMPLATE_TEXT.replace(old, new, 1), Loader=cfn_loader())
    problems = cfnspec.validate(cfn_spec, tpl)
    assert any(want in p for p in problems), problems
    assert len(problems) <= 2, problems      # that mistake, not noise


def resources_of(template, rtype):
    return [(n, r) for n, r in template["Resources"].items() if r["Type"] == rtype]


def test_cfn_structure(template):
    """What the resource database does not know: conditions, mappings."""
    res = template["Resources"]
    conds = set(template.get("Conditions", {}))
    maps = template.get("Mappings", {})
    for name, r in res.items():
        if "Condition" in r:
            assert r["Condition"] in conds, name
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
              "WorkMailOrganizationId": "m-0123456789abcdef",
              "QueueAdoptLocks": "mxgate-prod-QueueAdoptLocks-1ABC",
              "StateRedisUrl": "redis://state.example:6379",
              "StateRedisLine": "redis = redis://state.example:6379"}
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
    assert ("for job in check-eip:1min refresh-cert:1h check-volumes:1min check-state:1min; do"
            in text)
    assert "mxgate-check-state.timer" in text
    if shutil.which("shellcheck"):
        for f in (p,):
            r = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", str(f)], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0, r.stdout


def test_cfn_queue_volume_adoption_and_alarm(template):
    """The pieces of the cross-AZ adoption that mxgate-aws-boot relies on:
    the claims table (key VolumeId, named to the script in aws.env), the
    alarm on exactly the metric check-volumes publishes, the timer."""
    res = template["Resources"]
    (tname, table), = resources_of(template, "AWS::DynamoDB::Table")
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "VolumeId", "KeyType": "HASH"}]
    ud = user_data(template)
    assert f"\nLOCK_TABLE=${{{tname}}}\n" in ud
    script = BOOT.read_text()
    assert '"attribute_not_exists(VolumeId)' in script.replace("'", '"')
    m = re.search(r"put-metric-data --namespace (\S+) --metric-name (\S+)\s*\\\n\s*"
                  r"--dimensions \"Stack=\$STACK\"", script)
    assert m, "check-volumes publishes the metric"
    (_, alarm), = resources_of(template, "AWS::CloudWatch::Alarm")
    a = alarm["Properties"]
    assert (a["Namespace"], a["MetricName"]) == m.groups()
    assert a["Dimensions"] == [{"Name": "Stack", "Value": {"Ref": "AWS::StackName"}}]
    assert a["EvaluationPeriods"] == {"Ref": "UnattachedVolumeAlarmMinutes"} and a["Period"] == 60
    assert a["Threshold"] == 1 and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert "check-volumes:1min" in ud and "mxgate-check-volumes.timer" in ud
    # the role may write only this table
    (_, role), = resources_of(template, "AWS::IAM::Role")
    stmts = [st for pol in role["Properties"]["Policies"]
             for st in pol["PolicyDocument"]["Statement"]]
    dyn = [st for st in stmts if "dynamodb:PutItem" in st["Action"]]
    assert dyn and all(st["Resource"] == {"Fn::GetAtt": [tname, "Arn"]} for st in dyn)


# ------------------------------------------------- CloudFormation, issue 17: a fleet shares its state

NO_VALUE = object()


def cfn_eval(node, params, conds, attrs):
    """The value CloudFormation gives node: Ref, Condition, !If, !Equals,
    !Not, !And, !Or, !Join, !Sub and !GetAtt evaluated with the parameter
    values params, the conditions conds and the attribute values attrs
    ("Resource.Attribute")."""
    def ev(x):
        return cfn_eval(x, params, conds, attrs)
    if isinstance(node, list):
        return [v for v in map(ev, node) if v is not NO_VALUE]
    if not isinstance(node, dict) or len(node) != 1:
        return node if not isinstance(node, dict) else {k: ev(v) for k, v in node.items()}
    (fn, args), = node.items()
    if fn == "Ref":
        return NO_VALUE if args == "AWS::NoValue" else params[args]
    if fn == "Condition":
        return conds[args]
    if fn == "Fn::Equals":
        return str(ev(args[0])) == str(ev(args[1]))
    if fn == "Fn::Not":
        return not ev(args[0])
    if fn == "Fn::And":
        return all(ev(a) for a in args)
    if fn == "Fn::Or":
        return any(ev(a) for a in args)
    if fn == "Fn::If":
        return ev(args[1] if conds[args[0]] else args[2])
    if fn == "Fn::Join":
        return args[0].join(str(v) for v in ev(args[1]))
    if fn == "Fn::GetAtt":
        return attrs[".".join(args)]
    if fn == "Fn::Sub":
        text, varmap = (args, {}) if isinstance(args, str) else args
        local = {k: ev(v) for k, v in varmap.items()}

        def one(m):
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(local[name])
            return str(attrs[name] if "." in name and not name.startswith("AWS::")
                       else params[name])
        return re.sub(r"\$\{([^}]+)\}", one, text)
    return {fn: ev(args)}


def cfn_conditions(template, params):
    conds = {}
    for name, c in template.get("Conditions", {}).items():
        conds[name] = cfn_eval(c, params, conds, {})
    return conds


ENDPOINT = "mxgate-prod-statecache-1abc.x7y8z9.ng.0001.euw1.cache.amazonaws.com"
FLEET_PARAMS = {"MxHostName": "mx.example.com", "DomainName": "example.com",
                "NlbSubnetCidrs": ["10.0.0.0/24", "10.0.1.0/24"], "DmarcEnforcement": "monitor",
                "MxgateBinaryUrl": "s3://art/mxgate/0.1/mxgate", "QueueVolumeSize": "20",
                "TlsCertSecretArn": "arn:c", "TlsKeySecretArn": "arn:k",
                "MaxDrainMinutes": "120", "WorkMailOrganizationId": "m-" + "0123456789abcdef" * 2,
                "AcceptUnknownRecipients": "no", "EnableIpv6": "false", "AlarmTopicArn": "",
                "AWS::Region": "eu-west-1", "AWS::StackName": "mxgate-prod",
                "QueueArchiveBucket": "bucket", "QueueAdoptLocks": "mxgate-prod-locks",
                "VpcId": "vpc-1", "StateNodeType": "cache.t4g.micro"}
FLEET_ATTRS = {"StateCache.PrimaryEndPoint.Address": ENDPOINT,
               "StateCache.PrimaryEndPoint.Port": "6379",
               "StateSecurityGroup.GroupId": "sg-state", "GatewaySecurityGroup.GroupId": "sg-gw"}


def section(conf, name):
    """The uncommented directives of one [section] of an INI text."""
    m = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[|\Z)", conf, re.M | re.S)
    assert m, f"no [{name}] in the config"
    out = {}
    for ln in m.group(1).splitlines():
        ln = ln.split(";", 1)[0].strip()
        if ln:
            k, v = (s.strip() for s in ln.split("=", 1))
            out[k] = v
    return out


@pytest.mark.parametrize("shared,count,fleet", [("auto", "2", True), ("auto", "1", False),
                                                ("valkey", "1", True), ("none", "2", False)])
def test_cfn_fleet_shares_state_through_valkey(template, tmp_path, shared, count, fleet):
    """Issue 17: the config the user data writes for a fleet has [state]
    redis pointing at the ElastiCache (Valkey) primary endpoint the stack
    creates, the script's aws.env names it to mxgate-aws-boot (check-state),
    check-config accepts the config, and only the gateways may reach the
    cache.  SharedState = auto shares from two gateways on; none never."""
    params = dict(FLEET_PARAMS, SharedState=shared, GatewayCount=count)
    conds = cfn_conditions(template, params)
    res = template["Resources"]
    created = {n for n, r in res.items() if "Condition" not in r or conds[r["Condition"]]}
    (lt_name, lt), = resources_of(template, "AWS::EC2::LaunchTemplate")
    ud = cfn_eval(lt["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"],
                  params, conds, FLEET_ATTRS)
    conf = ud.split("<<CONF\n", 1)[1].split("\nCONF\n", 1)[0]
    env = ud.split("/etc/mxgate/aws.env <<ENV\n", 1)[1].split("\nENV\n", 1)[0]
    state = section(conf, "state")
    url = f"redis://{ENDPOINT}:6379"
    if fleet:
        assert state.get("redis") == url, conf
        assert f"\nSTATE_REDIS={url}" in "\n" + env
        caches = [n for n in created if res[n]["Type"] == "AWS::ElastiCache::ReplicationGroup"]
        assert caches == ["StateCache"]
        cache = res["StateCache"]["Properties"]
        assert cache["Engine"] == "valkey"
        assert cache["TransitEncryptionEnabled"] is False    # mxgate speaks no TLS to Redis
        assert cache["AtRestEncryptionEnabled"] is True
        assert cache["CacheSubnetGroupName"] == {"Ref": "StateSubnetGroup"}
        assert res["StateSubnetGroup"]["Properties"]["SubnetIds"] == {"Ref": "PublicSubnetIds"}
        sgs = cfn_eval(cache["SecurityGroupIds"], params, conds, FLEET_ATTRS)
        assert sgs == ["sg-state"]
        # into the cache's group: only port 6379 from the gateways' group
        ingress = [cfn_eval(r["Properties"], params, conds, FLEET_ATTRS) for n, r in res.items()
                   if n in created and r["Type"] == "AWS::EC2::SecurityGroupIngress"]
        assert ingress == [{"GroupId": "sg-state", "IpProtocol": "tcp", "FromPort": 6379,
                            "ToPort": 6379, "SourceSecurityGroupId": "sg-gw",
                            "Description": ingress[0]["Description"]}]
        state_sg = res["StateSecurityGroup"]["Properties"]
        assert "SecurityGroupIngress" not in state_sg
        assert [e["CidrIp"] for e in state_sg["SecurityGroupEgress"]] == ["127.0.0.1/32"]
        # and the gateways may leave towards it (their egress is a closed list)
        egress = cfn_eval(res["GatewaySecurityGroup"]["Properties"]["SecurityGroupEgress"],
                          params, conds, FLEET_ATTRS)
        assert [e for e in egress if e.get("DestinationSecurityGroupId") == "sg-state"] \
            == [{"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379,
                 "DestinationSecurityGroupId": "sg-state",
                 "Description": "Shared state (ElastiCache Valkey, [state] redis)"}]
    else:
        assert "redis" not in state, conf
        assert "\nSTATE_REDIS=\n" in "\n" + env + "\n"
        assert not [n for n in created if n.startswith("State")]
        egress = cfn_eval(res["GatewaySecurityGroup"]["Properties"]["SecurityGroupEgress"],
                          params, conds, FLEET_ATTRS)
        assert not [e for e in egress if e.get("FromPort") == 6379]
    # conservative connection-level defence, counted fleet-wide with [state]
    rl = section(conf, "ratelimit")
    assert 0 < int(rl["connections_per_ip"]) and 0 < int(rl["messages_per_ip"])
    # check-config accepts the generated config (paths moved to tmp)
    conf = (conf.replace("/etc/mxgate/tls/fullchain.pem", str(tmp_path / "c.pem"))
            .replace("/etc/mxgate/tls/privkey.pem", str(tmp_path / "k.pem"))
            .replace("/var/spool/mxgate", str(tmp_path / "q"))
            .replace("/etc/mxgate/recipients", str(tmp_path / "recipients")))
    (tmp_path / "recipients").write_text("")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(tmp_path / "c.pem"), "-days", "2", "-subj", "/CN=mx.example.com"],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "m.conf").write_text(conf)
    p = subprocess.run([mxgate_bin(), "check-config", "-c", str(tmp_path / "m.conf")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr + conf


def test_aws_readme_documents_the_shared_state(template):
    """What is shared, the choice, no TLS, fail open, the failover restart,
    and the rates the generated config sets, as the template has them."""
    text = (SRC / "deploy" / "aws" / "README.md").read_text()
    for s in ("SharedState", "Valkey", "fails open", "mxgate_state_errors_total",
              "TransitEncryptionEnabled: false", "check-state", "greylist", "pregreet",
              "StateNodeType"):
        assert s in text, s
    assert set(template["Parameters"]["SharedState"]["AllowedValues"]) == {"auto", "valkey", "none"}
    for v in template["Parameters"]["SharedState"]["AllowedValues"]:
        assert f"| `{v}`" in text, v
    rl = section(user_data(template).split("<<CONF\n", 1)[1], "ratelimit")
    for k in ("connections_per_ip", "messages_per_ip"):
        assert f"`{k} = {rl[k]}`" in text, k


def test_cfn_fleet_config_counts_once_for_the_fleet(template, gateway, workdir):
    """The [state] and [ratelimit] sections the user data writes for a
    fleet, run by two real gateways against a real redis-server on loopback
    standing for the ElastiCache endpoint: a client's connections to either
    gateway add up in one counter (before issue 17's template, each gateway
    counted on its own)."""
    from test_conndef_fleet import Redis
    from mxtest import RawClient, assert_reply
    r = Redis(workdir)
    try:
        params = dict(FLEET_PARAMS, SharedState="auto", GatewayCount="2")
        attrs = dict(FLEET_ATTRS, **{"StateCache.PrimaryEndPoint.Address": "127.0.0.1",
                                     "StateCache.PrimaryEndPoint.Port": str(r.port)})
        (_, lt), = resources_of(template, "AWS::EC2::LaunchTemplate")
        ud = cfn_eval(lt["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"],
                      params, cfn_conditions(template, params), attrs)
        conf = ud.split("<<CONF\n", 1)[1].split("\nCONF\n", 1)[0]
        sections = {s: section(conf, s) for s in ("state", "ratelimit", "pregreet")}
        assert sections["state"]["redis"] == f"redis://127.0.0.1:{r.port}"
        a, b = gateway(sections), gateway(sections)
        for gw in (a, b, b):
            with RawClient(gw.port, source="127.0.0.2") as c:
                assert_reply(c.banner, 220)
        key = sections["state"]["key_prefix"] + "rl:connections_per_ip [127.0.0.2]"
        assert r.cmd("INCRBY", key, 0) == ":3"
        ttl = int(r.cmd("TTL", key)[1:])
        assert 0 < ttl <= 60          # window = 1m, an expiry set by the first hit
    finally:
        r.stop()
