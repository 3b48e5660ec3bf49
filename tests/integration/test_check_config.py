"""`mxgate check-config`: exit 0 on a good file; otherwise every problem as
FILE:LINE: message and a non-zero exit.  `mxgate run` refuses a bad file
with the same messages.  `mxgate version` prints the version."""

import re
import subprocess
import time

import pytest

from mxtest import (free_port, make_test_ca, mxgate_bin, pid_listens_on, scaled, source_dir)


def base_lines(d, port):
    return [
        "; a good config",                          # 1
        "[server]",                                 # 2
        "hostname = mx.example.test",               # 3
        f"listen = 127.0.0.1:{port}",               # 4
        f"control_socket = {d}/control.sock",       # 5
        "",                                         # 6
        "[limits]",                                 # 7
        "max_recipients = 10",                      # 8
        "command_timeout = 5m",                     # 9
        "",                                         # 10
        "[access]",                                 # 11
        "deny = 192.0.2.0/24",                      # 12
        "",                                         # 13
        "[domains]",                                # 14
        "accepted_domains = example.test",          # 15
        "",                                         # 16
        "[queue]",                                  # 17
        f"directory = {d}/queue",                   # 18
        "",                                         # 19
        "[auth]",                                   # 20
        "spf = no",                                 # 21
        "dkim = no",                                # 22
        "dmarc = no",                               # 23
        "",                                         # 24
        "[route default]",                          # 25
        "type = directory",                         # 26
        f"directory = {d}/mailbox",                 # 27
        "",
    ]


def write_conf(d, lines, name="mxgate.conf"):
    p = d / name
    p.write_text("\n".join(lines) + "\n")
    return p


def line_no(lines, needle):
    hits = [i + 1 for i, line in enumerate(lines) if needle in line]
    assert len(hits) == 1, f"{needle!r} matches lines {hits}"
    return hits[0]


def check(path, *extra):
    p = subprocess.run([mxgate_bin(), "check-config", "-c", str(path), *extra],
                       capture_output=True, text=True, timeout=scaled(20))
    return p.returncode, p.stdout + p.stderr


def diags(out, path):
    """{line: [message, ...]} of the FILE:LINE: lines."""
    res = {}
    rx = re.compile(r"^" + re.escape(str(path)) + r":(\d+): (.*)$")
    for line in out.splitlines():
        m = rx.match(line)
        if m:
            res.setdefault(int(m.group(1)), []).append(m.group(2))
    return res


def replaced(lines, needle, new):
    out = list(lines)
    out[line_no(lines, needle) - 1] = new
    return out


@pytest.fixture
def conf(workdir):
    port = free_port()
    return workdir, base_lines(workdir, port), port


def test_good_file_passes(conf):
    d, lines, _ = conf
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 0, f"good config refused:\n{out}"
    assert not diags(out, p), out


def test_harness_config_passes(gateway):
    gw = gateway(start=False)
    p = gw.cli("check-config")
    assert p.returncode == 0, p.stdout + p.stderr


def test_unknown_key_with_did_you_mean(conf):
    d, lines, _ = conf
    lines = replaced(lines, "max_recipients", "max_recipient = 10")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0
    got = diags(out, p)
    n = line_no(lines, "max_recipient =")
    assert n in got, f"no {p}:{n}: message in:\n{out}"
    msg = " ".join(got[n])
    assert "max_recipient" in msg and "did you mean" in msg.lower() and "max_recipients" in msg, msg


def test_unknown_section(conf):
    d, lines, _ = conf
    lines = replaced(lines, "[limits]", "[limts]")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0
    n = line_no(lines, "[limts]")
    got = diags(out, p)
    assert n in got and "limits" in " ".join(got[n]), out


def all_diags(out, path):
    """Every FILE:LINE: and FILE: message line (not the FILE: N errors summary)."""
    prefix = str(path) + ":"
    return [ln for ln in out.splitlines()
            if ln.startswith(prefix) and not re.search(r": (\d+ errors?|ok)$", ln)]


def with_cert(lines, d, ca):
    return lines + ["[tls]", f"cert_file = {ca.chain}", f"key_file = {ca.key}",
                    "[mta_sts]", "mode = enforce"]


# one typo, one diagnostic: checks that depend on what the typo lost stay
# quiet (issue 16 review: route type, [tls] cert_file, [server], [domains]);
# (line to replace, its replacement, lines appended, message, line it is at)
ONE_TYPO = [
    ("type = directory", "type = dir", [], "bad value for 'type'", "type = dir"),
    ("cert_file =", "cert_fil = CHAIN", [],
     "unknown directive 'cert_fil' in [tls] (did you mean 'cert_file'?)", "cert_fil ="),
    ("[server]", "[sever]", [], "unknown section [sever] (did you mean [server]?)", "[sever]"),
    ("[domains]", "[domain]", [], "unknown section [domain] (did you mean [domains]?)",
     "[domain]"),
    ("[route default]", "[rout default]", [], "unknown section [rout]", "[rout default]"),
    ("key_file =", "key_file =", [], "empty value for 'key_file'", "key_file ="),
    ("hostname =", "; hostname is set below", ["[limits]", "hostname = mx.example.test"],
     "'hostname' belongs in [server], not [limits]", "hostname ="),
]


@pytest.mark.parametrize("needle,new,append,msg,at", ONE_TYPO)
def test_one_typo_gives_one_error(conf, needle, new, append, msg, at):
    d, lines, _ = conf
    ca = make_test_ca(d)
    lines = with_cert(lines, d, ca)
    rc, out = check(write_conf(d, lines))
    assert rc == 0 and not all_diags(out, d / "mxgate.conf"), out
    lines = replaced(lines, needle, new.replace("CHAIN", ca.chain)) + append
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 2, out
    got = all_diags(out, p)
    assert len(got) == 1, out
    assert got[0].startswith(f"{p}:{line_no(lines, at)}: ") and msg in got[0], out


BAD_VALUES = [
    ("max_recipients", "max_recipients = lots"),
    ("max_recipients", "max_recipients = 0"),
    ("command_timeout", "command_timeout = soon"),
    ("command_timeout", "command_timeout = 5x"),
    ("spf = no", "spf = maybe"),
    ("type = directory", "type = carrier-pigeon"),
    ("listen =", "listen = 127.0.0.1:99999"),
    ("listen =", "listen = localhost:25"),
    ("accepted_domains", "accepted_domains = exa mple..test"),
    ("hostname", "hostname = -bad-.example.test"),
]


@pytest.mark.parametrize("needle,new", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_bad_value(conf, needle, new):
    d, lines, _ = conf
    lines = replaced(lines, needle, new)
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0, f"{new!r} accepted:\n{out}"
    n = line_no(lines, new)
    assert n in diags(out, p), f"no {p}:{n}: message for {new!r} in:\n{out}"


BAD_CIDRS = [
    ("deny = 192.0.2.1/24", "192.0.2.0/24"),     # host bits set: did you mean
    ("deny = 300.1.2.3/8", None),
    ("deny = 10.0.0.0/33", None),
    ("deny = 2001:db8::/129", None),
    ("deny = banana", None),
]


@pytest.mark.parametrize("new,suggest", BAD_CIDRS, ids=[b[0] for b in BAD_CIDRS])
def test_bad_cidr(conf, new, suggest):
    d, lines, _ = conf
    lines = replaced(lines, "deny =", new)
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0, f"{new!r} accepted:\n{out}"
    n = line_no(lines, new)
    got = diags(out, p)
    assert n in got, f"no {p}:{n}: message in:\n{out}"
    if suggest:
        assert suggest in " ".join(got[n]), f"expected a did-you-mean {suggest}: {got[n]}"


def test_missing_cert_file(conf):
    d, lines, _ = conf
    lines = lines + ["[tls]", "cert_file = /nonexistent/mxgate/cert.pem",
                     "key_file = /nonexistent/mxgate/key.pem", ""]
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0
    got = diags(out, p)
    assert line_no(lines, "cert_file") in got, out
    assert line_no(lines, "key_file") in got, out


def test_duplicate_listener(conf):
    d, lines, port = conf
    lines = replaced(lines, "listen =", f"listen = 127.0.0.1:{port}, 127.0.0.1:{port}")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0
    assert line_no(lines, "listen =") in diags(out, p), out


def test_missing_default_route(conf):
    d, lines, _ = conf
    lines = replaced(lines, "[route default]", "[route other]")
    lines = lines + ["domains = other.test"]
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0
    assert diags(out, p), f"no {p}:LINE: message in:\n{out}"


def test_every_problem_reported(conf):
    d, lines, _ = conf
    lines = replaced(lines, "max_recipients", "max_recipient = 10")
    lines = replaced(lines, "command_timeout", "command_timeout = soon")
    lines = replaced(lines, "deny =", "deny = 192.0.2.1/24")
    lines = replaced(lines, "type = directory", "type = carrier-pigeon")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0
    got = diags(out, p)
    want = {line_no(lines, s) for s in ("max_recipient =", "command_timeout =", "deny =",
                                        "type =")}
    assert want <= set(got), f"expected problems at lines {sorted(want)}, got {sorted(got)}:\n{out}"


def test_run_refuses_bad_file_with_same_messages(conf):
    d, lines, port = conf
    lines = replaced(lines, "max_recipients", "max_recipient = 10")
    lines = replaced(lines, "deny =", "deny = 300.1.2.3/8")
    p = write_conf(d, lines)
    _, out_check = check(p)
    proc = subprocess.Popen([mxgate_bin(), "run", "-c", str(p)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(d))
    try:
        deadline = time.monotonic() + scaled(10)
        while proc.poll() is None and time.monotonic() < deadline:
            assert not pid_listens_on(proc.pid, port), "mxgate run started on a bad config"
            time.sleep(0.05)
        assert proc.poll() is not None, "mxgate run did not exit on a bad config"
        out_run = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
    assert proc.returncode != 0
    want = diags(out_check, p)
    assert want, out_check
    assert diags(out_run, p) == want, f"run:\n{out_run}\ncheck-config:\n{out_check}"


def test_unreadable_file(workdir):
    p = workdir / "nope.conf"
    rc, out = check(p)
    assert rc != 0
    assert str(p) in out, out


def test_version():
    cm = (source_dir() / "CMakeLists.txt").read_text()
    m = re.search(r"project\(mxgate\s+VERSION\s+([0-9.]+)", cm)
    assert m
    p = subprocess.run([mxgate_bin(), "version"], capture_output=True, text=True,
                       timeout=scaled(10))
    assert p.returncode == 0, p.stdout + p.stderr
    assert m.group(1) in p.stdout, f"version {m.group(1)} not in {p.stdout!r}"


# ---------------------------------------------------------------- where bounces go

SES = "inbound-smtp.eu-west-1.amazonaws.com"


def smtp_default(lines, host):
    """The default route relays to host, like a gateway in front of SES."""
    i = line_no(lines, "type = directory")           # the route's directory follows it
    return lines[:i - 1] + ["type = smtp", f"hosts = {host}"] + lines[i + 1:]


BAD_OUTBOUND = [
    # (name, default route host, outbound route lines, needle of the bad line, message)
    ("to the inbound downstream", "smtp.downstream.test:25",
     ["role = outbound", "type = smtp", "hosts = SMTP.downstream.test"],
     "hosts = SMTP", "the downstream of inbound route 'default'"),
    ("to SES inbound", f"{SES}:25",
     ["role = outbound", "type = smtp", f"hosts = {SES}"],
     f"hosts = {SES}", "SES inbound endpoint"),
    ("into a folder", "smtp.downstream.test:25",
     ["role = outbound", "type = directory", "directory = @D@/bounces"],
     "type = directory", "never reach their senders"),
]


@pytest.mark.parametrize("name,host,route,needle,msg", BAD_OUTBOUND,
                         ids=[b[0] for b in BAD_OUTBOUND])
def test_outbound_route_that_loses_bounces_is_an_error(conf, name, host, route, needle, msg):
    d, lines, _ = conf
    lines = smtp_default(lines, host) + ["[route outbound]"] + \
        [r.replace("@D@", str(d)) for r in route] + [""]
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc != 0, f"accepted:\n{out}"
    got = diags(out, p)
    n = [i + 1 for i, ln in enumerate(lines) if ln.startswith(needle)][-1]
    assert n in got, f"no {p}:{n}: message in:\n{out}"
    assert msg in " ".join(got[n]), got[n]


def test_outbound_smart_host_and_implicit_route_pass(conf):
    """An outbound smart host other than the inbound downstream is fine, and
    so is a file without any outbound route (implicit: MX delivery)."""
    d, lines, _ = conf
    lines = smtp_default(lines, f"{SES}:25")
    lines = replaced(lines, "accepted_domains = ", "accepted_domains = example.test\n"
                     "accepted_recipients = alice@example.test")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 0 and not diags(out, p), out
    lines = lines + ["[route outbound]", "role = outbound", "type = smtp",
                     "hosts = email-smtp.eu-west-1.amazonaws.com:587", ""]
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 0 and not diags(out, p), out


# ---------------------------------------------------------------- issue 11: backscatter

BACKSCATTER = [
    # (name, default route lines, [domains] lines, domains warned about)
    ("smtp without list or verify", ["type = smtp", "hosts = smtp.downstream.test"],
     [], ["example.test", "example.net"]),
    ("mx without list", ["type = mx"], [], ["example.test", "example.net"]),
    ("smtp with verify_recipients", ["type = smtp", "hosts = smtp.downstream.test",
                                     "verify_recipients = yes"], [], []),
    ("list for one domain only", ["type = smtp", "hosts = smtp.downstream.test"],
     ["accepted_recipients = alice@example.test"], ["example.net"]),
    ("lists for both", ["type = smtp", "hosts = smtp.downstream.test"],
     ["accepted_recipients = alice@example.test, bob@example.net"], []),
    ("directory route", ["type = directory", "directory = @D@/mailbox"], [], []),
]


@pytest.mark.parametrize("name,route,dom_lines,warned", BACKSCATTER,
                         ids=[b[0] for b in BACKSCATTER])
def test_accepted_domain_without_recipient_check_warns(conf, name, route, dom_lines, warned):
    """An accepted domain with neither a recipient list nor a route with
    verify_recipients accepts mail for users who do not exist (bounced later:
    backscatter): a warning at the accepted_domains line, exit 0.  A folder
    route (the embedded default) refuses nobody: no warning."""
    d, lines, _ = conf
    i = line_no(lines, "type = directory")
    lines = lines[:i - 1] + [r.replace("@D@", str(d)) for r in route] + lines[i + 1:]
    lines = replaced(lines, "accepted_domains = ",
                     "\n".join(["accepted_domains = example.test, example.net"] + dom_lines))
    lines = "\n".join(lines).split("\n")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 0, out
    got = diags(out, p)
    n = line_no(lines, "accepted_domains = ")
    msgs = [m for m in got.get(n, []) if "backscatter" in m]
    assert all(m.startswith("warning: ") for m in msgs), msgs
    assert sorted(re.search(r"accepted domain (\S+) ", m).group(1) for m in msgs) == \
        sorted(warned), out
    assert all("route 'default' (line " in m for m in msgs), msgs
    others = {k: v for k, v in got.items() if k != n}
    assert not others or all("backscatter" not in m for v in others.values() for m in v), out



def test_verify_recipients_at_ses_inbound_warns(conf):
    """SES inbound accepts every address of the domain: a callout to it
    verifies nothing - a warning at the route's verify_recipients line,
    unless the domain has a recipient list."""
    d, lines, _ = conf
    lines = smtp_default(lines, f"{SES}:25") + ["verify_recipients = yes", ""]
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 0, out
    got = diags(out, p)
    n = line_no(lines, "verify_recipients = yes")
    assert [m for m in got.get(n, []) if "accepts every address" in m], out
    lines = replaced(lines, "accepted_domains = ", "accepted_domains = example.test\n"
                     "accepted_recipients = alice@example.test")
    p = write_conf(d, lines)
    rc, out = check(p)
    assert rc == 0 and not diags(out, p), out
