"""benchlib - the services mxgate's benchmark starts, measures and stops.

Everything runs inside the private network + mount namespace that
bench/run.sh makes (unshare --net --mount): the only interface there is a
fresh loopback, so nothing can reach another address, ports never collide
with other work on the machine, the DNS server can sit on 127.0.0.1:53, and
/etc/resolv.conf can be bind-mounted to point at it for the Postfix side's
libraries (libresolv for OpenDMARC and pyspf) without touching the host.

    Dns         unbound (tests/integration/dnsserver.py) on 127.0.0.1:53
    Sink        smtp-sink with a running counter (messages delivered)
    Group       a cpuacct cgroup (v1) the measured server runs in: CPU seconds
                of the whole process tree, even of children that exited;
                memory is sampled from its member processes (RSS and PSS)
    Mxgate      mxgate with a bench config
    Postfix     Postfix from a private config dir and queue under the work
                dir (postfix -c DIR start), optionally with OpenDKIM (verify),
                OpenDMARC and postfix-policyd-spf-python, and (inspection)
                rspamd's milter proxy + clamav-milter
    Scanners    one rspamd (normal worker for mxgate's /checkv2, proxy worker
                with milter = yes for Postfix, forwarding to that normal
                worker) and one clamd (local signature DB with the EICAR test
                signature), both in a cgroup of their own
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent
sys.path.insert(0, str(SRC / "tests" / "integration"))

import dnsserver  # noqa: E402  (UnboundServer, make_dkim_key, dkim_sign)

CGROOT = Path("/sys/fs/cgroup/cpuacct")
HOSTNAME = "mx.bench.example"
RCPT_DOMAIN = "example.test"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_port(port, timeout=20.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(512).startswith(b"220"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------ namespace setup

def setup_namespace(work):
    """Loopback up, roomy TCP settings (per network namespace), resolv.conf."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for key, val in (("net/core/somaxconn", "65535"),
                     ("net/ipv4/tcp_max_syn_backlog", "65535"),
                     ("net/ipv4/ip_local_port_range", "10000 65000"),
                     ("net/ipv4/tcp_tw_reuse", "1")):
        try:
            Path("/proc/sys", key).write_text(val)
        except OSError as e:
            log(f"note: cannot set {key}: {e}")
    rc = work / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\noptions attempts:2 timeout:2\n")
    subprocess.run(["mount", "--bind", str(rc), "/etc/resolv.conf"], check=True)


# ------------------------------------------------------------ DNS

class Dns(dnsserver.UnboundServer):
    """unbound on 127.0.0.1:53 of the private namespace."""

    def start(self, timeout=10):
        orig = dnsserver._free_udp_port
        dnsserver._free_udp_port = lambda: 53
        try:
            return super().start(timeout)
        finally:
            dnsserver._free_udp_port = orig


# ------------------------------------------------------------ cgroup + memory

def _proc_mem(pid):
    """(rss_kib, pss_kib) of one process, (0, 0) if gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cleanup_stale_groups():
    """Remove empty cgroups an earlier, interrupted run left behind."""
    try:
        for d in CGROOT.glob("mxbench-*"):
            try:
                d.rmdir()
            except OSError:
                pass
    except OSError:
        pass


class Group:
    """A cpuacct cgroup; falls back to summing /proc/PID/stat of known pids."""

    def __init__(self, name):
        self.path = CGROOT / f"mxbench-{os.getpid()}-{name}"
        self.ok = False
        try:
            self.path.mkdir(exist_ok=True)
            self.ok = True
        except OSError as e:
            log(f"note: no cpuacct cgroup ({e}); CPU from /proc only")
        self.extra_pids = set()
        self._sampling = False
        self.peak_rss = self.peak_pss = 0

    def preexec(self):
        """For Popen(preexec_fn=...): move the child into the group."""
        if self.ok:
            with open(self.path / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

    def add(self, pid):
        self.extra_pids.add(pid)
        if self.ok:
            try:
                (self.path / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass

    def pids(self):
        if self.ok:
            try:
                return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return []
        return [p for p in self.extra_pids if Path(f"/proc/{p}").exists()]

    def cpu_seconds(self):
        if self.ok:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        tck = os.sysconf("SC_CLK_TCK")
        total = 0
        for p in self.pids():
            try:
                f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in f[11:15])
            except (OSError, IndexError):
                pass
        return total / tck

    def memory(self):
        rss = pss = 0
        for p in self.pids():
            r, s = _proc_mem(p)
            rss += r
            pss += s
        return rss, pss

    # -- peak sampling in a thread
    def start_sampling(self, interval=0.2):
        self.peak_rss = self.peak_pss = 0
        self._sampling = True

        def loop():
            while self._sampling:
                r, s = self.memory()
                self.peak_rss = max(self.peak_rss, r)
                self.peak_pss = max(self.peak_pss, s)
                time.sleep(interval)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop_sampling(self):
        self._sampling = False
        self._thread.join(5)
        r, s = self.memory()
        self.peak_rss = max(self.peak_rss, r)
        self.peak_pss = max(self.peak_pss, s)
        return self.peak_rss, self.peak_pss

    def kill_all(self):
        for p in self.pids():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass

    def remove(self):
        if self.ok:
            for _ in range(50):
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


# ------------------------------------------------------------ sink

class Sink:
    """smtp-sink on 127.0.0.1; count() = messages completed so far."""

    def __init__(self, work, name="sink", dump=False, data_delay=0):
        self.work = work
        self.name = name
        # smtp-sink -w: seconds before the answer to DATA (a slow downstream)
        self.data_delay = data_delay
        self.dump = work / f"{name}-dump" if dump else None
        self.port = None
        self.proc = None

    def start(self):
        self.port = free_port()
        self.out = self.work / f"{self.name}.out"
        self.fh = open(self.out, "wb")
        dump = []
        if self.dump:
            self.dump.mkdir(exist_ok=True)
            shutil.chown(self.dump, "postfix")
            dump = ["-d", f"{self.dump}/m."]
        # -m: connections at once; backlog 1024
        self.proc = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-c", "-m", "2000", "-u", "postfix", *dump,
             *(["-w", str(self.data_delay)] if self.data_delay else []),
             f"127.0.0.1:{self.port}", "1024"], stdout=self.fh, stderr=subprocess.STDOUT)
        if not wait_port(self.port):
            raise RuntimeError("smtp-sink did not start")
        return self

    def count(self):
        try:
            with open(self.out, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 200))
                tail = f.read().decode("ascii", "replace")
        except OSError:
            return 0
        i = tail.rfind("mesg=")
        if i < 0:
            return 0
        digits = ""
        for ch in tail[i + 5:]:
            if not ch.isdigit():
                break
            digits += ch
        return int(digits or 0)

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.count()
            if c >= n:
                return time.monotonic(), c
            time.sleep(0.01)
        return None, self.count()

    def stop(self):
        dnsserver.stop_process(self.proc)
        self.proc = None


# ------------------------------------------------------------ black hole

class BlackHole:
    """A black-holed downstream: a listener on 127.0.0.1 that accepts every
    connection and then says nothing - no greeting, never reads, never closes.
    For a sender this is the harsher black hole: the connection succeeds, so
    only the greeting timeout ends it (a port that drops SYNs ends at the
    same connect timeout, without even holding a socket here).  Counts the
    connections it accepted and the most it held open at once."""

    def __init__(self):
        self.port = None
        self.accepted = 0
        self.max_open = 0
        self._socks = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = None
        self._ls = None

    def start(self):
        import select
        self._ls = socket.socket()
        self._ls.bind(("127.0.0.1", 0))
        self._ls.listen(1024)
        self.port = self._ls.getsockname()[1]

        def loop():
            while not self._stop:
                with self._lock:
                    socks = list(self._socks)
                try:
                    r, _, _ = select.select([self._ls] + socks, [], [], 0.2)
                except (OSError, ValueError):
                    continue  # close_all() closed one meanwhile
                for s in r:
                    if s is self._ls:
                        c, _ = self._ls.accept()
                        with self._lock:
                            self._socks.append(c)
                            self.accepted += 1
                            self.max_open = max(self.max_open, len(self._socks))
                        continue
                    # readable: the peer sent something (kept unread) or closed
                    try:
                        gone = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    if gone:
                        with self._lock:
                            if s in self._socks:
                                self._socks.remove(s)
                        s.close()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def open_now(self):
        with self._lock:
            return len(self._socks)

    def reset_counts(self):
        """Forget the counts (the connections still open stay open)."""
        with self._lock:
            self.accepted = 0
            self.max_open = len(self._socks)

    def close_all(self):
        """Close every connection held (the listener stays)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            s.close()

    def stop(self):
        self._stop = True
        if self._thread:
            self._thread.join(5)
        self.close_all()
        if self._ls:
            self._ls.close()
            self._ls = None


# ------------------------------------------------------------ results files

def splice(path, section, begin, end):
    """Put section (which starts with the line `begin` and ends with `end`)
    into the Markdown file at path: replace the old one between the same
    markers, or add it before the index of other result files that
    bench/report.py puts last, or at the end."""
    index = "<!-- results index (bench/report.py) -->"  # report.INDEX_MARK
    text = path.read_text() if path.exists() else "# mxgate benchmark results\n\n"
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + section.rstrip("\n") + text[b:]
    elif index in text:
        a = text.index(index)
        text = text[:a] + section.rstrip("\n") + "\n\n" + text[a:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# ------------------------------------------------------------ mxgate

class Mxgate:
    def __init__(self, work, name, binary, sink_port, checks, tls=None, fsync=True,
                 log_level="info", extra_conf="", domains=(RCPT_DOMAIN,)):
        self.dir = work / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.binary = binary
        self.port = free_port()
        self.group = Group(name)
        self.proc = None
        yes = "yes" if checks else "no"
        tls_sec = ""
        if tls:
            tls_sec = f"[tls]\ncert_file = {tls[0]}\nkey_file = {tls[1]}\n"
        # The bench zones are unsigned local data: with the root trust anchor
        # (DNSSEC on by default where dns-root-data is installed) every answer
        # would be bogus.  Binaries before that default know no "none".
        ref = subprocess.run([binary, "config-reference"], capture_output=True, text=True).stdout
        anchor = "trust_anchor_file = none\n" if "root_anchor_file" in ref else ""
        self.conf = self.dir / "mxgate.conf"
        self.conf.write_text(f"""[server]
hostname = {HOSTNAME}
listen = 127.0.0.1:{self.port}
control_socket = {self.dir}/control.sock

[limits]
max_connections = 15000
max_connections_per_ip = 15000
message_size_limit = 35M
{tls_sec}
[domains]
accepted_domains = {', '.join(domains)}

[queue]
directory = {self.dir}/queue
fsync = {"yes" if fsync else "no"}

[log]
level = {log_level}
file = {self.dir}/mxgate.log

[dns]
forwarders = 127.0.0.1@53
{anchor}
[auth]
spf = {yes}
dkim = {yes}
dmarc = {yes}
dmarc_enforcement = reject

[route default]
type = smtp
hosts = 127.0.0.1:{sink_port}
tls = none
max_connections = 20
msgs_per_connection = 1000
{extra_conf}""")

    def start(self):
        chk = subprocess.run([self.binary, "check-config", "-c", str(self.conf)],
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"mxgate check-config: {chk.stdout}{chk.stderr}")
        self.err = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen([self.binary, "run", "-c", str(self.conf)],
                                     stdout=self.err, stderr=subprocess.STDOUT,
                                     preexec_fn=self.group.preexec)
        self.group.add(self.proc.pid)
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError("mxgate did not start: " + self.log_tail())
        return self

    def log_tail(self, n=2000):
        t = ""
        for f in ("mxgate.log", "stderr.log"):
            p = self.dir / f
            if p.exists():
                t += p.read_text(errors="replace")[-n:]
        return t

    def rss_kib(self):
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def hwm_kib(self):
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.group.kill_all()
        self.group.remove()


# ------------------------------------------------------------ scanners

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIG = "Mxbench-Test-EICAR"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Scanners:
    """One rspamd and one clamd shared by both sides, in a cgroup of their own
    (their CPU is counted for whichever gateway is being measured: the runs
    are sequential, so only that one is using them).

    rspamd: Debian's rules (rules/rspamd.lua: regexp, header, MIME, HTML, URL
    checks) plus deploy/rspamd/mxgate.lua, no Redis, no network lookups
    modules (the namespace has no internet; SPF/DKIM/DMARC stay with the
    gateways), PCRE instead of hyperscan (no compile at start).  A normal
    worker (one per core) answers mxgate's /checkv2; a proxy worker with
    milter = yes answers Postfix and forwards each message to that same
    normal worker, as Debian's default worker-proxy.inc does.  milter_headers
    adds X-Spam-Status for Postfix (mxgate writes its own).

    clamd: a local signature DB (one .ndb body signature for the EICAR test
    string - freshclam cannot download here, and the real DB would be the
    same cost for both sides), unix socket."""

    def __init__(self, work):
        self.dir = work / "scanners"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.group = Group("scanners")
        self.rspamd_port = free_port()
        self.milter_port = free_port()
        self.clamd_sock = self.dir / "clamd.sock"
        self.procs = []
        self.logs = []

    def _configs(self):
        d = self.dir
        lua = SRC / "deploy" / "rspamd" / "mxgate.lua"
        workers = os.cpu_count() or 2
        (d / "rspamd.conf").write_text(f"""options {{
  pidfile = "{d}/rspamd.pid";
  disable_hyperscan = true;
  filters = "";
  dns {{ nameserver = ["127.0.0.1:53"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{d}/rspamd.log"; level = "notice"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{self.rspamd_port}"; count = {workers}; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{self.milter_port}";
  milter = yes;
  timeout = 120s;
  count = 1;
  upstream "local" {{ default = yes; hosts = "127.0.0.1:{self.rspamd_port}"; }}
  reject_message = "Spam message rejected";
}}
actions {{ reject = 15; add_header = 6; }}
lua = "/usr/share/rspamd/rules/rspamd.lua";
lua = "{lua}";
modules {{
  path = "/usr/share/rspamd/plugins/settings.lua";
  path = "/usr/share/rspamd/plugins/milter_headers.lua";
}}
settings {{ }}
milter_headers {{ use = ["x-spam-status"]; skip_local = false; skip_authenticated = false; }}
""")
        db = d / "clamdb"
        db.mkdir(exist_ok=True)
        (db / "mxbench-test.ndb").write_text(f"{EICAR_SIG}:0:*:{EICAR.hex()}\n")
        (d / "clamd.conf").write_text(
            f"LocalSocket {self.clamd_sock}\nLocalSocketMode 666\nDatabaseDirectory {db}\n"
            f"Foreground yes\nLogFile {d}/clamd.log\nTemporaryDirectory {d}\n"
            f"StreamMaxLength 40M\nMaxThreads 12\nIdleTimeout 60\nPidFile {d}/clamd.pid\n")

    def start(self, timeout=90):
        self._configs()
        d = self.dir
        for name, argv in (
                ("rspamd", ["/usr/bin/rspamd", "-f", "-i", "-c", str(d / "rspamd.conf"),
                            f"--var=DBDIR={d}", f"--var=RUNDIR={d}", f"--var=LOGDIR={d}"]),
                ("clamd", ["/usr/sbin/clamd", "-c", str(d / "clamd.conf")])):
            fh = open(d / f"{name}.out", "wb")
            self.logs.append(fh)
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                 preexec_fn=self.group.preexec)
            self.group.add(p.pid)
            self.procs.append(p)
        deadline = time.monotonic() + timeout
        checks = {"rspamd /ping": self._rspamd_up, "rspamd proxy": self._proxy_up,
                  "clamd PING": self._clamd_up}
        while checks:
            for what, fn in list(checks.items()):
                if fn():
                    del checks[what]
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("scanner exited: " + self.log_tail())
            if checks and time.monotonic() > deadline:
                raise RuntimeError(f"scanners not up ({', '.join(checks)}): " + self.log_tail())
            time.sleep(0.1)
        return self

    def _rspamd_up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.rspamd_port), timeout=1) as s:
                s.settimeout(2)
                s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                return b"pong" in s.recv(512)
        except OSError:
            return False

    def _proxy_up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.milter_port), timeout=1):
                return True
        except OSError:
            return False

    def _clamd_up(self):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.clamd_sock))
                s.sendall(b"zPING\0")
                return s.recv(64) == b"PONG\0"
        except OSError:
            return False

    def clamd_cpu_seconds(self):
        """CPU of the clamd process (all its threads) so far: the scanners'
        cgroup minus this is rspamd's."""
        clamd = self.procs[1] if len(self.procs) > 1 else None
        try:
            f = Path(f"/proc/{clamd.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (AttributeError, OSError, IndexError, ValueError):
            return 0.0

    def log_tail(self, n=1500):
        t = ""
        for f in ("rspamd.log", "rspamd.out", "clamd.log", "clamd.out"):
            p = self.dir / f
            if p.exists():
                t += f"--- {f}\n" + p.read_text(errors="replace")[-n:]
        return t

    def stop(self):
        for p in self.procs:
            dnsserver.stop_process(p, grace=10)
        self.procs = []
        for fh in self.logs:
            fh.close()
        self.logs = []
        self.group.kill_all()
        self.group.remove()


# ------------------------------------------------------------ Postfix

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POLICYD_CF = ("policyd-spf unix - n n - 0 spawn\n"
              "  user=policyd-spf argv=/usr/bin/policyd-spf {conf}\n")


class Postfix:
    """Postfix from its own config dir, queue and data dir under work/NAME."""

    def __init__(self, work, name, sink_port, checks, tls=None, scan=None):
        self.dir = work / name
        if self.dir.exists():
            subprocess.run(["rm", "-rf", str(self.dir)])
        self.conf_dir = self.dir / "etc"
        self.mdir = self.dir / "milter"
        for d in (self.conf_dir, self.mdir, self.dir / "data", self.dir / "queue"):
            d.mkdir(parents=True)
        os.chmod(self.mdir, 0o755)
        self.port = free_port()
        self.sink_port = sink_port
        self.checks = checks
        self.scan = scan  # a Scanners: + rspamd's milter proxy and clamav-milter
        self.group = Group(name)
        self.milters = []
        queue = self.dir / "queue"
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(queue),
            "data_directory": str(self.dir / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": HOSTNAME,
            "mydomain": "bench.example",
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            # the load comes from 127.0.0.1 as if from the internet: not "ours"
            "mynetworks": "127.0.0.254/32",
            "relay_domains": RCPT_DOMAIN,
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtputf8_enable": "no",
            "message_size_limit": str(35 * 1024 * 1024),
            "maillog_file": str(self.dir / "maillog"),
            "maillog_file_prefixes": str(self.dir),
            "default_process_limit": "400",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "default_destination_concurrency_limit": "20",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "max_use": "100000",
            "smtpd_recipient_restrictions": "reject_unauth_destination",
        }
        if tls:
            main.update({"smtpd_tls_cert_file": tls[0], "smtpd_tls_key_file": tls[1],
                         "smtpd_tls_security_level": "may"})
        master = MASTER_CF.format(port=f"127.0.0.1:{self.port}")
        if checks:
            spf_conf = self.mdir / "policyd-spf.conf"
            spf_conf.write_text("debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\n"
                                "Mail_From_reject = Fail\nPermError_reject = False\n"
                                "TempError_Defer = False\nskip_addresses = 127.0.0.254/32\n")
            os.chmod(spf_conf, 0o644)
            master += POLICYD_CF.format(conf=spf_conf)
            main["smtpd_recipient_restrictions"] = (
                "reject_unauth_destination, check_policy_service unix:private/policyd-spf")
            main["policyd-spf_time_limit"] = "3600"
            main["smtpd_milters"] = (f"unix:{self.mdir}/opendkim.sock, "
                                     f"unix:{self.mdir}/opendmarc.sock")
            if scan:
                # the same order as mxgate: clamd, then rspamd
                main["smtpd_milters"] += (f", unix:{self.mdir}/clamav-milter.sock, "
                                          f"inet:127.0.0.1:{scan.milter_port}")
            main["non_smtpd_milters"] = ""
            main["milter_default_action"] = "tempfail"
        (self.conf_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.conf_dir / "master.cf").write_text(master)

    def _milter_configs(self):
        m = self.mdir
        (m / "internal-hosts").write_text("127.0.0.254\n")
        (m / "opendkim.conf").write_text(f"""Mode v
Socket local:{m}/opendkim.sock
UMask 000
Syslog no
AuthservID {HOSTNAME}
PidFile {m}/opendkim.pid
InternalHosts {m}/internal-hosts

MinimumKeyBits 1024
# libunbound inside opendkim: forward to our server.  Not ResolverConfiguration:
# opendkim re-parses that file per message, and libunbound's parser is not
# thread-safe (DESIGN.md, known traps) - under concurrency messages tempfail.
Nameservers 127.0.0.1
AlwaysAddARHeader yes
""")
        (m / "opendmarc.conf").write_text(f"""Socket local:{m}/opendmarc.sock
UMask 000
Syslog false
AuthservID {HOSTNAME}
TrustedAuthservIDs {HOSTNAME}
IgnoreHosts {m}/internal-hosts
RejectFailures true
SPFIgnoreResults false
SPFSelfValidate false
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
PidFile {m}/opendmarc.pid
""")
        if self.scan:
            # OnFail Defer: clamd down or failing -> 4xx, never a silent pass
            (m / "clamav-milter.conf").write_text(f"""MilterSocket unix:{m}/clamav-milter.sock
MilterSocketMode 666
Foreground yes
PidFile {m}/clamav-milter.pid
ClamdSocket unix:{self.scan.clamd_sock}
OnClean Accept
OnInfected Reject
OnFail Defer
AddHeader Replace
ReportHostname {HOSTNAME}
LogFile {m}/clamav-milter.log
LogInfected Basic
ReadTimeout 120
MaxFileSize 40M
TemporaryDirectory {m}
""")

    def _pf(self, *args, timeout=60):
        return subprocess.run(["/usr/sbin/postfix", "-c", str(self.conf_dir), *args],
                              capture_output=True, text=True, timeout=timeout,
                              preexec_fn=self.group.preexec)

    def start(self):
        if self.checks:
            self._milter_configs()
            self.mlog = open(self.mdir / "milters.log", "wb")
            argvs = [["/usr/sbin/opendkim", "-f", "-x", str(self.mdir / "opendkim.conf")],
                     ["/usr/sbin/opendmarc", "-f", "-c", str(self.mdir / "opendmarc.conf")]]
            socks = ["opendkim.sock", "opendmarc.sock"]
            if self.scan:
                argvs.append(["/usr/sbin/clamav-milter", "-c",
                              str(self.mdir / "clamav-milter.conf")])
                socks.append("clamav-milter.sock")
            for argv in argvs:
                p = subprocess.Popen(argv, stdout=self.mlog, stderr=subprocess.STDOUT,
                                     preexec_fn=self.group.preexec)
                self.group.add(p.pid)
                self.milters.append(p)
            deadline = time.monotonic() + 15
            for sock in socks:
                while not (self.mdir / sock).exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError("milter did not start: " + (
                            self.mdir / "milters.log").read_text(errors="replace"))
                    time.sleep(0.05)
        r = self._pf("set-permissions")
        if r.returncode != 0:
            log("postfix set-permissions: " + (r.stdout + r.stderr).strip()[-500:])
        r = self._pf("start")
        if r.returncode != 0:
            raise RuntimeError("postfix start: " + r.stdout + r.stderr)
        if not wait_port(self.port):
            raise RuntimeError("postfix did not listen: " + self.log_tail())
        return self

    def log_tail(self, n=2000):
        p = self.dir / "maillog"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def stop(self):
        try:
            self._pf("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for p in self.milters:
            dnsserver.stop_process(p, grace=10)
        self.milters = []
        # master waits for its children; anything left is killed
        time.sleep(0.5)
        self.group.kill_all()
        self.group.remove()
