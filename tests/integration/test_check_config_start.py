"""`mxgate check-config` catches what `run` would fail on (issue 16): a
certificate whose key does not match, a `user` that does not exist, a log
file that cannot be written, `[mta_sts] listen` without a certificate, the
metrics or dashboard port on the SMTP port (or on each other), a queue
directory that cannot be created or that the run user cannot write - each
a FILE:LINE error - and `run` agrees.
Warnings (exit 0): a certificate that does not cover hostname / mx_hosts /
mta-sts.<domain>, one that expires within 14 days, tls = verify towards an
IP literal.  MTA-STS enforce without STARTTLS is an error.  Errors that
no line causes name what is missing instead of FILE:0."""

import os
import pwd
import subprocess

from mxtest import free_port, make_test_ca, mxgate_bin, scaled, _openssl
from test_check_config import base_lines, check, diags, line_no, replaced, write_conf


def with_tls(lines, ca, cert=None, key=None):
    return lines + ["[tls]", f"cert_file = {cert or ca.chain}", f"key_file = {key or ca.key}"]


def error_at(out, path, lines, needle, text):
    n = line_no(lines, needle)
    got = diags(out, path)
    assert n in got, f"no {path}:{n}: in:\n{out}"
    assert any(text in m and not m.startswith("warning:") for m in got[n]), out
    return n


def run_refuses(path):
    p = subprocess.run([mxgate_bin(), "run", "-c", str(path)], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode != 0
    return p.stdout + p.stderr


def test_key_not_matching_certificate(workdir):
    ca = make_test_ca(workdir)
    other = make_test_ca(workdir, name="other")
    lines = with_tls(base_lines(workdir, free_port()), ca, key=other.key)
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    error_at(out, p, lines, "key_file =", "does not belong to cert_file")
    assert sum(len(v) for v in diags(out, p).values()) == 1, out
    # run says the same, before binding anything
    assert "does not belong to cert_file" in run_refuses(p)
    # the matching pair is fine and covers mx.example.test: no warning
    lines = with_tls(base_lines(workdir, free_port()), ca)
    rc, out = check(write_conf(workdir, lines))
    assert rc == 0 and "warning" not in out, out


def test_user_that_does_not_exist(workdir):
    lines = base_lines(workdir, free_port())
    lines.insert(line_no(lines, "hostname ="), "user = mxgate-no-such-user")
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    error_at(out, p, lines, "user = mxgate-no-such", "user mxgate-no-such-user does not exist")
    lines[line_no(lines, "user =") - 1] = "user = nobody"
    rc, out = check(write_conf(workdir, lines))
    assert rc == 0, out
    # the queue directory does not exist yet: root would create it for itself
    assert "warning: queue directory" in out and "install -d -o nobody" in out, out


def test_log_file_not_writable(workdir):
    lines = base_lines(workdir, free_port()) + ["[log]", f"file = {workdir}/no/such/dir/mx.log"]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    error_at(out, p, lines, "file = ", "cannot be created: folder")
    assert "cannot be created" in run_refuses(p)
    (workdir / "logdir").mkdir()
    lines[-1] = f"file = {workdir}/logdir"
    rc, out = check(write_conf(workdir, lines))
    error_at(out, p, lines, "file = ", "is a directory")
    lines[-1] = f"file = {workdir}/logdir/mx.log"
    rc, out = check(write_conf(workdir, lines))
    assert rc == 0, out


def test_listener_collisions_and_mta_sts_without_cert(workdir):
    port = free_port()
    lines = base_lines(workdir, port) + ["[metrics]", f"listen = 127.0.0.1:{port}"]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    n = len(lines)   # the [metrics] listen line
    got = diags(out, p)
    assert n in got and "same port as [server] listen at line 4" in got[n][0], out
    lines = base_lines(workdir, port) + ["[mta_sts]", f"listen = 127.0.0.1:{free_port()}"]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    got = diags(out, p)
    assert "needs the [tls] certificate" in got[len(lines)][0], out
    assert "needs the [tls] certificate" in run_refuses(p)


def test_enforce_without_starttls(workdir):
    lines = base_lines(workdir, free_port()) + ["[mta_sts]", "mode = enforce"]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    error_at(out, p, lines, "mode = enforce", "STARTTLS is not offered")
    ca = make_test_ca(workdir)
    rc, out = check(write_conf(workdir, with_tls(lines, ca)))
    assert rc == 0, out


def test_certificate_warnings(workdir):
    # covers only other.example.test, and expires in 5 days
    d = workdir / "tls"
    d.mkdir()
    key, cert = d / "short.key", d / "short.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "5",
             "-subj", "/CN=other.example.test", "-addext", "subjectAltName=DNS:other.example.test")
    lines = base_lines(workdir, free_port()) + [
        "[tls]", f"cert_file = {cert}", f"key_file = {key}",
        "[mta_sts]", "mx_hosts = mx.example.test, mx2.example.test",
        f"listen = 127.0.0.1:{free_port()}"]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 0, out
    n = line_no(lines, "cert_file =")
    warns = diags(out, p)[n]
    cover = [w for w in warns if "does not cover" in w]
    assert len(cover) == 1, out
    for name in ("mx.example.test", "mx2.example.test", "mta-sts.example.test"):
        assert name in cover[0], out
    assert any(w.startswith("warning:") and ("expires in 4 days" in w or "expires in 5 days" in w)
               for w in warns), out


def test_verify_towards_ip_literal(workdir):
    lines = base_lines(workdir, free_port()) + [
        "[route lan]", "domains = lan.example.test", "hosts = 192.0.2.25:25"]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 0, out
    got = diags(out, p)[line_no(lines, "hosts = 192.0.2.25")]
    assert got[0].startswith("warning: route 'lan': tls = verify (the default) with IP-literal "
                             "host 192.0.2.25"), out


def test_missing_directive_named_not_file_0(workdir):
    lines = [ln for ln in base_lines(workdir, free_port())
             if not ln.startswith("listen") and not ln.startswith("accepted_domains")]
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2
    assert f"{p}:0:" not in out, out
    assert f"{p}: no listen address: set [server] listen" in out, out
    assert f"{p}: no accepted_domains: set [domains] accepted_domains" in out, out


def test_admin_listen_on_smtp_or_metrics_port(workdir):
    port, mport = free_port(), free_port()
    for admin, clash_with in ((port, "[server] listen at line 4"),
                              (mport, "[metrics] listen at line")):
        lines = base_lines(workdir, port) + [
            "[metrics]", f"listen = 127.0.0.1:{mport}",
            "[admin]", f"listen = 127.0.0.1:{admin}", "token = s3cret-token-0123456789"]
        p = write_conf(workdir, lines)
        rc, out = check(p)
        assert rc == 2, out
        got = diags(out, p)
        n = len(lines) - 1   # the [admin] listen line
        assert list(got) == [n], out
        assert "[admin] listen 127.0.0.1:%d uses the same port as %s" % (admin, clash_with) \
            in got[n][0], out
        assert "uses the same port" in run_refuses(p)
    lines = base_lines(workdir, port) + [
        "[metrics]", f"listen = 127.0.0.1:{mport}",
        "[admin]", f"listen = 127.0.0.1:{free_port()}", "token = s3cret-token-0123456789"]
    rc, out = check(write_conf(workdir, lines))
    assert rc == 0, out


def test_queue_directory_that_cannot_be_created(workdir):
    lines = replaced(base_lines(workdir, free_port()), "directory = " + str(workdir) + "/queue",
                     "directory = /proc/mxq")
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    error_at(out, p, lines, "directory = /proc/mxq", 'queue directory "/proc/mxq" cannot be '
             'created: "/proc" is on the kernel\'s proc file system')
    assert sum(len(v) for v in diags(out, p).values()) == 1, out
    assert not os.path.exists("/proc/mxq")
    assert "/proc/mxq" in run_refuses(p)
    # below a file
    (workdir / "afile").write_text("x")
    lines = replaced(lines, "directory = /proc/mxq", f"directory = {workdir}/afile/q")
    rc, out = check(write_conf(workdir, lines))
    assert rc == 2, out
    error_at(out, p, lines, "afile/q", f'"{workdir}/afile" is not a folder')


def test_queue_directory_the_run_user_cannot_write(workdir):
    """Started as root with `user`, run opens the queue as root, then refuses
    when the user cannot write it; check-config says so first."""
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root")
    q = workdir / "queue"
    q.mkdir(mode=0o700)
    lines = base_lines(workdir, free_port())
    lines.insert(line_no(lines, "hostname ="), "user = nobody")
    p = write_conf(workdir, lines)
    rc, out = check(p)
    assert rc == 2, out
    error_at(out, p, lines, "directory = " + str(q), "is not writable by user nobody")
    assert "is not writable by user nobody" in run_refuses(p)
    # owned by the user, reachable through its parent: fine
    os.chown(q, pwd.getpwnam("nobody").pw_uid, -1)
    os.chmod(workdir, 0o755)
    rc, out = check(p)
    assert rc == 0 and "warning" not in out, out
