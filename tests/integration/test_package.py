"""Issue 16, packaging: `make deb` (deploy/debian/build-deb.sh) builds a
Debian package with dpkg-deb.  Checked twice:

- unpacked with `dpkg-deb -x` into a temporary root: control fields and
  dependencies, maintainer scripts, the file list and modes, the unit's
  binary path, both man pages render with groff and mxgate.conf(5) lists
  every directive of `mxgate config-reference`; the packaged default config
  passes `check-config`;
- installed for real with `dpkg --root` into a throwaway root (an overlay
  of this machine's / in a mount namespace of its own, see ThrowawayRoot):
  the maintainer scripts run chrooted there, the system user appears in its
  /etc/passwd, `mxgate check-config` accepts the installed default, the man
  pages and the logrotate snippet work, then `dpkg -r` and `--purge`.  The
  machine itself is never touched, so the test runs everywhere (as root, as
  `make test` does), also where mxgate is installed.
"""

import gzip
import os
import pwd
import re
import shutil
import subprocess
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
                 "ca-certificates", "publicsuffix", "dns-root-data"):
        assert need in deps, f["Depends"]
    # DNSSEC is on by default where the root trust anchor is installed:
    # the package brings it
    assert "dns-root-data" in deps, f["Depends"]
    assert "dns-root-data" not in f.get("Recommends", "")
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

class ThrowawayRoot:
    """A copy-on-write view of this machine's root file system in a mount
    namespace of its own: an overlay with lowerdir=/ and its upper layer on a
    tmpfs, /dev and /proc bound in.  `dpkg --root` installs into it and runs
    the maintainer scripts chrooted there, so adduser writes the overlay's
    /etc/passwd, the real Debian userland does the work, and nothing of the
    machine changes (the whole view vanishes with the namespace).  A holder
    process keeps the namespace alive; commands enter it with nsenter, and
    its files are read through /proc/PID/root."""

    def __init__(self, base):
        self.base = Path(base)
        self.root = self.base / "root"
        script = (
            "set -e; b=$1; mount -t tmpfs -o mode=0755 mxgate-test $b; "
            "mkdir $b/upper $b/work $b/root; "
            "mount -t overlay mxgate-test -o lowerdir=/,upperdir=$b/upper,workdir=$b/work $b/root; "
            "mount --rbind /dev $b/root/dev; mount -t proc proc $b/root/proc; "
            "mount -t tmpfs -o mode=0755 run $b/root/run; "
            "echo ready; exec sleep 3600")
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             str(self.base)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.wait(timeout=30)
            raise AssertionError("cannot make the throwaway root (overlay in a mount "
                                 "namespace, needs root): " + self.proc.stderr.read())

    def path(self, rel):
        """A path inside the throwaway root, as this process can read it."""
        return Path(f"/proc/{self.proc.pid}/root{self.root}") / rel.lstrip("/")

    def run(self, *args):
        """A command in the namespace (paths outside the root: the machine's)."""
        return run("nsenter", "--target", str(self.proc.pid), "--mount", *args)

    def chroot(self, *args):
        return self.run("chroot", str(self.root), *args)

    def dpkg(self, *args):
        return self.run("dpkg", f"--root={self.root}", *args)

    def user(self, name):
        """The passwd entry of the throwaway root, or None."""
        for line in self.path("/etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == name:
                return f
        return None

    def group(self, name):
        for line in self.path("/etc/group").read_text().splitlines():
            f = line.split(":")
            if f[0] == name:
                return f
        return None

    def fresh(self):
        """As on a machine that never had mxgate: a mxgate package, user or
        path of this machine is removed from the copy (only the copy)."""
        st = self.run("dpkg-query", f"--admindir={self.root}/var/lib/dpkg", "-W",
                      "-f=${Status}", "mxgate").stdout
        if st and "not-installed" not in st:
            p = self.dpkg("--purge", "--force-depends", "mxgate")
            assert p.returncode == 0, p.stdout + p.stderr
        if self.user("mxgate"):
            assert self.chroot("userdel", "mxgate").returncode == 0
        if self.group("mxgate"):
            assert self.chroot("groupdel", "mxgate").returncode == 0
        p = self.chroot("rm", "-rf", *OWN_PATHS)
        assert p.returncode == 0, p.stderr

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def troot(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the package test needs root (make test runs as root: unshare, "
                    "overlay, dpkg --root)")
    r = ThrowawayRoot(tmp_path / "ns")
    try:
        r.fresh()
        yield r
    finally:
        r.close()


def test_install_check_purge(deb, troot):
    """dpkg -i, -r and --purge of the package, for real, in the throwaway
    root: it runs on every machine, also one with mxgate installed."""
    r = troot
    host_passwd = Path("/etc/passwd").read_text()
    # the deb is on the machine's file system, visible at the same path
    p = r.dpkg("-i", str(deb))
    # dependencies (dns-root-data among them) are checked against the
    # machine's own package database, copied in the overlay
    assert p.returncode == 0, p.stdout + p.stderr
    st = r.run("dpkg-query", f"--admindir={r.root}/var/lib/dpkg", "-W", "-f=${Status}",
               "mxgate").stdout
    assert st == "install ok installed"
    assert r.path("/usr/share/dns/root.key").is_file()      # Depends: dns-root-data
    # postinst ran chrooted in the throwaway root: the system user is in its
    # /etc/passwd (and not in the machine's)
    u = r.user("mxgate")
    assert u, "postinst did not create the mxgate user"
    uid, gid, home, shell = int(u[2]), int(u[3]), u[5], u[6]
    assert uid < 1000 and shell == "/usr/sbin/nologin" and home == "/var/spool/mxgate"
    assert r.group("mxgate") and int(r.group("mxgate")[2]) == gid
    assert Path("/etc/passwd").read_text() == host_passwd
    spool = os.stat(r.path("/var/spool/mxgate"))
    assert spool.st_uid == uid and spool.st_mode & 0o777 == 0o750
    conf = os.stat(r.path("/etc/mxgate/mxgate.conf"))
    assert conf.st_gid == gid and conf.st_mode & 0o777 == 0o640
    assert r.path("/var/log/mxgate").is_dir()
    assert r.path("/var/lib/mxgate/created-user").read_text().strip() == "mxgate"
    # the installed binary, the installed default config, its user
    p = r.chroot("/usr/sbin/mxgate", "check-config", "-c", "/etc/mxgate/mxgate.conf")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok" in p.stdout + p.stderr
    # the service account can read its config (the unit runs as mxgate;
    # the daemon re-reads the file on reload), other users cannot
    p = r.chroot("setpriv", "--reuid=mxgate", "--regid=mxgate", "--clear-groups",
                 "cat", "/etc/mxgate/mxgate.conf")
    assert p.returncode == 0 and "[server]" in p.stdout, p.stderr
    p = r.chroot("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 "cat", "/etc/mxgate/mxgate.conf")
    assert p.returncode != 0
    # man pages where man finds them
    for page in ("man8/mxgate.8.gz", "man5/mxgate.conf.5.gz"):
        assert r.path("/usr/share/man/" + page).is_file(), page
    if shutil.which("man"):
        p = r.chroot("man", "-P", "cat", "5", "mxgate.conf")
        assert p.returncode == 0 and "accepted_domains" in p.stdout, p.stderr
    # the logrotate snippet is valid for the installed user and directory
    if shutil.which("logrotate"):
        p = r.chroot("logrotate", "-d", "-s", "/var/lib/mxgate/logrotate.state",
                     "/etc/logrotate.d/mxgate")
        assert p.returncode == 0 and "error" not in (p.stdout + p.stderr).lower(), \
            p.stdout + p.stderr
    # remove keeps conffiles and the queue; purge takes the rest
    (r.path("/var/spool/mxgate") / "keep").write_text("queued")
    p = r.dpkg("-r", "mxgate")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not r.path("/usr/sbin/mxgate").exists()
    assert not r.path("/usr/share/man/man8/mxgate.8.gz").exists()
    assert r.path("/etc/mxgate/mxgate.conf").exists()
    assert r.path("/etc/logrotate.d/mxgate").exists()
    assert (r.path("/var/spool/mxgate") / "keep").exists()
    # purge never throws queued mail away: a non-empty queue (and so its
    # owner) stays
    p = r.dpkg("--purge", "mxgate")
    assert p.returncode == 0, p.stdout + p.stderr
    assert (r.path("/var/spool/mxgate") / "keep").exists() and r.user("mxgate")
    assert not r.path("/etc/mxgate").exists() and not r.path("/var/log/mxgate").exists()
    # with the queue empty, a second install and purge takes everything
    (r.path("/var/spool/mxgate") / "keep").unlink()
    p = r.dpkg("-i", str(deb))
    assert p.returncode == 0, p.stdout + p.stderr
    assert r.user("mxgate") and int(r.user("mxgate")[2]) == uid    # the same user
    p = r.dpkg("--purge", "mxgate")
    assert p.returncode == 0, p.stdout + p.stderr
    for path in OWN_PATHS:
        assert not os.path.lexists(r.path(path)), path
    assert r.user("mxgate") is None and r.group("mxgate") is None
    # what fresh() does on a machine that has mxgate installed (package,
    # user, a queued file): the copy ends up as on a machine that never had it
    assert r.dpkg("-i", str(deb)).returncode == 0
    (r.path("/var/spool/mxgate") / "keep").write_text("queued")
    r.fresh()
    for path in OWN_PATHS:
        assert not os.path.lexists(r.path(path)), path
    assert r.user("mxgate") is None and r.group("mxgate") is None
