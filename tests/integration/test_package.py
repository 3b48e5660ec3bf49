"""Issue 16, packaging: `make deb` (deploy/debian/build-deb.sh) builds a
Debian package with dpkg-deb.  Checked twice:

- unpacked with `dpkg-deb -x` into a temporary root: control fields and
  dependencies, maintainer scripts, the file list and modes, the unit's
  binary path, both man pages render with groff and mxgate.conf(5) lists
  every directive of `mxgate config-reference`; the packaged default config
  passes `check-config`;
- installed for real with `dpkg -i` (the machine is the CI machine and the
  test runs as root): the system user and directories exist, `mxgate
  check-config` accepts the installed default, then `dpkg --purge` leaves the
  system as it was found.  Skipped, not forced, when a mxgate package, a
  mxgate user or any of the package's paths already exist, or without root.
"""

import gzip
import os
import pwd
import grp
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mxtest import mxgate_bin, source_dir

SRC = source_dir()
BUILD_DEB = SRC / "deploy" / "debian" / "build-deb.sh"
OWN_PATHS = ["/etc/mxgate", "/var/spool/mxgate", "/var/log/mxgate", "/var/lib/mxgate",
             "/usr/sbin/mxgate", "/lib/systemd/system/mxgate.service",
             "/etc/logrotate.d/mxgate"]


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    build = Path(mxgate_bin()).parent
    p = run(str(BUILD_DEB), str(build), str(out))
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out
    return path


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    p = run("dpkg-deb", "-x", str(deb), str(root))
    assert p.returncode == 0, p.stderr
    ctl = tmp_path_factory.mktemp("control")
    p = run("dpkg-deb", "-e", str(deb), str(ctl))
    assert p.returncode == 0, p.stderr
    return root, ctl


def control_fields(ctl):
    fields = {}
    for line in (ctl / "control").read_text().splitlines():
        m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
        if m:
            fields[m.group(1)] = m.group(2)
    return fields


def test_control_fields(unpacked):
    root, ctl = unpacked
    f = control_fields(ctl)
    assert f["Package"] == "mxgate"
    version = run(mxgate_bin(), "version").stdout.split()[1]
    assert f["Version"] == version
    assert f["Architecture"] == run("dpkg", "--print-architecture").stdout.strip()
    deps = [d.strip().split()[0] for d in f["Depends"].split(",")]
    for need in ("libc6", "libssl3", "libevent-core-2.1-7", "libspf2-2", "libopendkim11",
                 "libopendmarc2", "libunbound8", "libinih1", "libhiredis0.14", "adduser",
                 "ca-certificates", "publicsuffix"):
        assert need in deps, f["Depends"]
    assert "dns-root-data" in f["Recommends"]
    assert (ctl / "conffiles").read_text().split() == ["/etc/mxgate/mxgate.conf",
                                                        "/etc/logrotate.d/mxgate"]
    for script in ("postinst", "prerm", "postrm"):
        s = ctl / script
        assert s.stat().st_mode & 0o111, script
        assert run("sh", "-n", str(s)).returncode == 0, script
    # md5sums cover every shipped file
    listed = {line.split(None, 1)[1] for line in (ctl / "md5sums").read_text().splitlines()}
    shipped = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert listed == shipped


def test_files_and_modes(unpacked):
    root, _ = unpacked
    binary = root / "usr/sbin/mxgate"
    assert binary.stat().st_mode & 0o777 == 0o755
    assert run(str(binary), "version").returncode == 0
    conf = root / "etc/mxgate/mxgate.conf"
    assert conf.stat().st_mode & 0o777 == 0o640
    unit = (root / "lib/systemd/system/mxgate.service").read_text()
    assert "/usr/local/sbin" not in unit
    assert "ExecStart=/usr/sbin/mxgate run -c /etc/mxgate/mxgate.conf" in unit
    assert "ReadWritePaths=/var/spool/mxgate\nReadWritePaths=-/var/log/mxgate\n" in unit
    # otherwise the unit of deploy/systemd
    src = (SRC / "deploy/systemd/mxgate.service").read_text()
    assert unit == src.replace("/usr/local/sbin/mxgate", "/usr/sbin/mxgate").replace(
        "ReadWritePaths=/var/spool/mxgate\n",
        "ReadWritePaths=/var/spool/mxgate\nReadWritePaths=-/var/log/mxgate\n")
    rot = (root / "etc/logrotate.d/mxgate").read_text()
    assert "/var/log/mxgate/mxgate.log" in rot and "/usr/sbin/mxgate reopen-logs" in rot
    # mxgate.lua: the rspamd rule the guide tells to copy to /etc/rspamd
    for doc in ("postmaster-guide.md", "config-reference.md", "mxgate.conf.example",
                "mxgate.lua"):
        assert (root / "usr/share/doc/mxgate" / doc).is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_packaged_unit_verifies(unpacked, tmp_path):
    root, _ = unpacked
    unit = (root / "lib/systemd/system/mxgate.service").read_text()
    p = tmp_path / "mxgate.service"
    p.write_text(unit.replace("/usr/sbin/mxgate", str(root / "usr/sbin/mxgate")))
    r = run("systemd-analyze", "verify", str(p))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mxgate.service" not in r.stderr, r.stderr


def test_default_config_checks(unpacked, tmp_path):
    """The packaged default passes check-config (as installed, with its user,
    in test_install_check_purge; here with an account that exists when the
    package's mxgate user does not)."""
    root, _ = unpacked
    conf = root / "etc/mxgate/mxgate.conf"
    text = conf.read_text()
    assert re.search(r"^user = mxgate$", text, re.M) and re.search(r"^group = mxgate$", text, re.M)
    try:
        pwd.getpwnam("mxgate")
    except KeyError:
        text = re.sub(r"^user = mxgate$", "user = nobody", text, flags=re.M)
        text = re.sub(r"^group = mxgate$", "group = nogroup", text, flags=re.M)
        conf = tmp_path / "mxgate.conf"
        conf.write_text(text)
    p = run(mxgate_bin(), "check-config", "-c", str(conf))
    assert p.returncode == 0, p.stdout + p.stderr


def manpage(root, rel):
    return gzip.decompress((root / rel).read_bytes()).decode()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
@pytest.mark.parametrize("rel,title", [("usr/share/man/man8/mxgate.8.gz", "MXGATE"),
                                       ("usr/share/man/man5/mxgate.conf.5.gz", "MXGATE.CONF")])
def test_man_pages_render(unpacked, rel, title):
    root, _ = unpacked
    src = manpage(root, rel)
    assert "@VERSION@" not in src
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww"], input=src, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr   # no groff warning either (-ww)
    text = re.sub(".\x08", "", p.stdout)   # overstrike bold
    assert text.startswith(title + "(") and "\nNAME\n" in text and "SEE ALSO" in text


def test_conf_man_lists_every_directive(unpacked):
    """mxgate.conf(5) comes from the directive tables: every `name` of the
    Markdown reference (same tables) is a .B entry, every section a .SS."""
    root, _ = unpacked
    man = manpage(root, "usr/share/man/man5/mxgate.conf.5.gz")
    ref = run(mxgate_bin(), "config-reference").stdout
    sections = re.findall(r"^## \[([^\]]+)\]", ref, re.M)
    names = re.findall(r"^\| `([^`]+)` \|", ref, re.M)
    assert len(sections) > 5 and len(names) > 50
    man_sections = re.findall(r"^\.SS \[([^\]]+)\]", man, re.M)
    man_names = [n.replace("\\-", "-") for n in re.findall(r"^\.B (\S+)$", man, re.M)]
    assert man_sections == sections
    assert [n for n in man_names if n in names] == names


# ------------------------------------------------------------ real install

def install_blockers():
    if os.geteuid() != 0:
        return "needs root"
    p = run("dpkg-query", "-W", "-f=${Status}", "mxgate")
    if p.returncode == 0 and "not-installed" not in p.stdout:
        return "a mxgate package is installed already: not touching it"
    try:
        pwd.getpwnam("mxgate")
        return "a mxgate user exists already"
    except KeyError:
        pass
    try:
        grp.getgrnam("mxgate")
        return "a mxgate group exists already"
    except KeyError:
        pass
    for path in OWN_PATHS:
        if os.path.lexists(path):
            return path + " exists already"
    return None


def dpkg(*args):
    """dpkg, retried while another engineer's apt/dpkg holds the lock."""
    for _ in range(60):
        p = run("dpkg", *args)
        if p.returncode != 2 or "lock" not in p.stderr:
            return p
        time.sleep(2)
    return p


def test_install_check_purge(deb):
    why = install_blockers()
    if why:
        pytest.skip(why)
    installed = False
    try:
        p = dpkg("-i", str(deb))
        installed = True
        assert p.returncode == 0, p.stdout + p.stderr
        st = run("dpkg-query", "-W", "-f=${Status}", "mxgate").stdout
        assert st == "install ok installed"
        u = pwd.getpwnam("mxgate")
        assert u.pw_uid < 1000 and u.pw_shell == "/usr/sbin/nologin"
        spool = os.stat("/var/spool/mxgate")
        assert spool.st_uid == u.pw_uid and spool.st_mode & 0o777 == 0o750
        conf = os.stat("/etc/mxgate/mxgate.conf")
        assert conf.st_gid == u.pw_gid and conf.st_mode & 0o777 == 0o640
        assert os.path.isdir("/var/log/mxgate")
        p = run("/usr/sbin/mxgate", "check-config", "-c", "/etc/mxgate/mxgate.conf")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "ok" in p.stdout + p.stderr
        # the service account can read its config (the unit runs as mxgate;
        # the daemon re-reads the file on reload), other users cannot
        p = run("setpriv", "--reuid=mxgate", "--regid=mxgate", "--clear-groups",
                "cat", "/etc/mxgate/mxgate.conf")
        assert p.returncode == 0 and "[server]" in p.stdout, p.stderr
        p = run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                "cat", "/etc/mxgate/mxgate.conf")
        assert p.returncode != 0
        # the logrotate snippet is valid for the installed user and directory
        if shutil.which("logrotate"):
            state = deb.parent / "logrotate.state"
            p = run("logrotate", "-d", "-s", str(state), "/etc/logrotate.d/mxgate")
            assert p.returncode == 0 and "error" not in (p.stdout + p.stderr).lower(), \
                p.stdout + p.stderr
        # remove keeps conffiles and the queue; purge takes the rest
        p = dpkg("-r", "mxgate")
        assert p.returncode == 0, p.stdout + p.stderr
        assert not os.path.exists("/usr/sbin/mxgate")
        assert os.path.exists("/etc/mxgate/mxgate.conf")
        assert os.path.isdir("/var/spool/mxgate")
        p = dpkg("--purge", "mxgate")
        assert p.returncode == 0, p.stdout + p.stderr
        installed = False
        for path in OWN_PATHS:
            assert not os.path.lexists(path), path
        with pytest.raises(KeyError):
            pwd.getpwnam("mxgate")
        with pytest.raises(KeyError):
            grp.getgrnam("mxgate")
    finally:
        if installed:
            dpkg("--purge", "mxgate")
