"""dnsserver - a real DNS server on loopback for mxgate's SPF/DKIM/DMARC tests.

Debian's unbound (/usr/sbin/unbound) runs in the foreground (-d) on
127.0.0.1:<free port> with a config written here: local-data records for
ordinary zones, auth-zone with a zone file for DNSSEC-signed zones, and
forward-zones to a UDP socket that reads and never answers (temperror).

    dns = UnboundServer(workdir)
    dns.add("example.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns.add_txt("sel._domainkey.example.test", long_text)   # split in 255-byte strings
    dns.blackhole("slow.test")                              # never answers
    dns.blackhole("_domainkey.bank.test")    # also below a zone with local data
    ta = dns.add_signed_zone("signed.test", [("signed.test", "TXT", "...")],
                             tamper=False)                   # -> trust-anchor file
    dns.start(); dns.port; dns.forwarder -> "127.0.0.1@PORT"; dns.stop()

Keys and signed zones are made at test time with ldns-keygen / ldns-signzone
(ldnsutils).  DKIM helpers: make_dkim_key(dir, bits) -> (private PEM bytes,
DNS TXT value) with openssl; dkim_sign(msg, selector, domain, key, ...) with
python3-dkim (Debian's /usr/bin/python3).

Run as a program for the C live test:
    dnsserver.py fixture DIR     writes DIR/port, DIR/*.eml, DIR/trust-anchor,
                                 serves until stdin closes.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNBOUND = "/usr/sbin/unbound"


def _free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _zone_of(name):
    """The local zone for a name: its last two labels (x.test)."""
    labels = name.rstrip(".").split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else labels[0]


def _txt_rdata(text):
    """TXT rdata as quoted 255-byte character-strings."""
    if isinstance(text, bytes):
        text = text.decode()
    parts = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)


def stop_process(proc, grace=5):
    """SIGTERM, then SIGKILL after grace seconds; None or an ended process
    is fine.  (Shared with bench/benchlib.py.)"""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class UnboundServer:
    def __init__(self, workdir):
        self.dir = Path(tempfile.mkdtemp(prefix="dns-", dir=str(workdir)))
        self.records = []          # (name, type, rdata-text)
        self.zones = set()
        self.auth_zones = {}       # zone -> zonefile
        self.blackholes = []       # zones
        self.proc = None
        self.port = None
        self._silent = None

    # ------------------------------------------------------------ data
    def add(self, name, rtype, rdata, ttl=60):
        name = name.rstrip(".")
        if rtype.upper() == "TXT" and not rdata.startswith('"'):
            rdata = _txt_rdata(rdata)
        self.records.append((name, rtype.upper(), rdata, ttl))
        self.zones.add(_zone_of(name))

    def add_txt(self, name, text, ttl=60):
        self.records.append((name.rstrip("."), "TXT", _txt_rdata(text), ttl))
        self.zones.add(_zone_of(name))

    def blackhole(self, zone):
        self.blackholes.append(zone.rstrip("."))

    def add_signed_zone(self, zone, records, tamper=False, algorithm="ED25519"):
        """Sign zone (records: (name, type, rdata)) with ldns; returns the
        path of a trust-anchor file (DS record) for it.  tamper=True edits
        a signed TXT record afterwards, so answers are bogus."""
        zone = zone.rstrip(".")
        zdir = self.dir / ("zone-" + zone)
        zdir.mkdir()
        lines = [f"$ORIGIN {zone}.", "$TTL 60",
                 f"@ IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 60",
                 f"@ IN NS ns.{zone}.", "ns IN A 127.0.0.1"]
        for name, rtype, rdata in records:
            if rtype.upper() == "TXT" and not rdata.startswith('"'):
                rdata = _txt_rdata(rdata)
            lines.append(f"{name.rstrip('.')}. IN {rtype} {rdata}")
        zfile = zdir / "zone"
        zfile.write_text("\n".join(lines) + "\n")
        ksk = subprocess.run(["ldns-keygen", "-a", algorithm, "-k", zone], cwd=zdir,
                             check=True, capture_output=True, text=True).stdout.strip()
        zsk = subprocess.run(["ldns-keygen", "-a", algorithm, zone], cwd=zdir,
                             check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["ldns-signzone", "-n", "zone", ksk, zsk], cwd=zdir, check=True,
                       capture_output=True)
        signed = zdir / "zone.signed"
        if tamper:
            text = signed.read_text()
            new, n = re.subn(r'(IN\s+TXT\s+")v=', r'\1X=', text, count=1)
            assert n == 1, "nothing to tamper with"
            signed.write_text(new)
        self.auth_zones[zone] = signed
        ta = zdir / "trust-anchor"
        ta.write_text((zdir / (ksk + ".ds")).read_text())
        return str(ta)

    # ------------------------------------------------------------ process
    @property
    def forwarder(self):
        return f"127.0.0.1@{self.port}"

    def _config(self):
        c = ["server:",
             "  interface: 127.0.0.1", f"  port: {self.port}", "  do-ip6: no",
             '  chroot: ""', '  username: ""', f'  directory: "{self.dir}"',
             '  pidfile: ""', "  use-syslog: no", '  logfile: ""', "  verbosity: 1",
             "  do-daemonize: no", "  access-control: 127.0.0.0/8 allow",
             '  module-config: "iterator"', "  do-not-query-localhost: no",
             '  local-zone: "test." nodefault', "  num-threads: 1",
             "  so-reuseport: no", "  outgoing-range: 64",
             "  infra-host-ttl: 1",
             ]
        for z in sorted(self.zones - set(self.auth_zones)):
            c.append(f'  local-zone: "{z}." static')
        # the DMARC tree walk (RFC 9989 4.10) ends with _dmarc.<TLD>: answer
        # it (NXDOMAIN) here rather than let unbound try the root servers
        for tld in sorted({z.split(".")[-1] for z in self.zones} -
                          {z for z in self.zones}):
            if "_dmarc." + tld not in self.zones:
                c.append(f'  local-zone: "_dmarc.{tld}." static')
        for name, rtype, rdata, ttl in self.records:
            c.append(f"  local-data: '{name}. {ttl} IN {rtype} {rdata}'")
        for z, f in self.auth_zones.items():
            c += ["auth-zone:", f'  name: "{z}."', f'  zonefile: "{f}"',
                  "  for-downstream: yes", "  for-upstream: no"]
        for z in self.blackholes:
            # a transparent local zone of its own, so a blackhole below a
            # zone with local data (static) is forwarded, not NXDOMAIN
            c.insert(c.index("  num-threads: 1"), f'  local-zone: "{z}." transparent')
        for z in self.blackholes:
            c += ["forward-zone:", f'  name: "{z}."',
                  f"  forward-addr: 127.0.0.1@{self._silent.getsockname()[1]}"]
        return "\n".join(c) + "\n"

    def start(self, timeout=10):
        if self.blackholes and self._silent is None:
            # reads nothing, answers nothing: queries there time out
            self._silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._silent.bind(("127.0.0.1", 0))
        for attempt in range(5):
            self.port = _free_udp_port()
            conf = self.dir / "unbound.conf"
            conf.write_text(self._config())
            chk = subprocess.run(["/usr/sbin/unbound-checkconf", str(conf)],
                                 capture_output=True, text=True)
            if chk.returncode != 0:
                raise RuntimeError("unbound.conf: " + chk.stdout + chk.stderr)
            self.log = open(self.dir / "unbound.log", "wb")
            self.proc = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._probe():
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError("unbound did not start: " +
                           (self.dir / "unbound.log").read_text(errors="replace")[-2000:])

    def _probe(self):
        """A query for the root SOA over UDP: any reply means we are up."""
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x06\x00\x01")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        try:
            s.sendto(q, ("127.0.0.1", self.port))
            s.recvfrom(512)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def close(self):
        self.stop()
        if self._silent is not None:
            self._silent.close()
            self._silent = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.close()


# ------------------------------------------------------------ DKIM helpers

def make_dkim_key(workdir, bits=2048, name=None):
    """An RSA key made with openssl: (private PEM bytes, "v=DKIM1; k=rsa; p=...")."""
    workdir = Path(workdir)
    name = name or f"rsa{bits}-{os.getpid()}-{time.monotonic_ns()}"
    priv = workdir / (name + ".pem")
    # 512-bit keys need the legacy code path of openssl genrsa
    subprocess.run(["openssl", "genrsa", "-out", str(priv), str(bits)], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(priv), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    return priv.read_bytes(), "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def make_ed25519_key():
    """(raw private key base64 for python3-dkim, DNS TXT value)."""
    import base64
    import nacl.signing  # python3-nacl, used by python3-dkim for ed25519
    sk = nacl.signing.SigningKey.generate()
    return (base64.b64encode(bytes(sk)),
            "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(sk.verify_key)).decode())


def dkim_sign(message, selector, domain, private_key, canon=(b"relaxed", b"relaxed"),
              algo=b"rsa-sha256", identity=None, headers=None):
    """The DKIM-Signature field (bytes, with CRLF) for message (bytes)."""
    import dkim
    include = headers or [b"from", b"to", b"subject", b"date", b"message-id"]
    sig = dkim.sign(message, selector.encode(), domain.encode(), private_key,
                    identity=identity.encode() if identity else None,
                    canonicalize=canon, include_headers=include,
                    signature_algorithm=algo, linesep=b"\r\n")
    return sig


def _fixture(d):
    """Zone + messages for tests/unit/test_policy_live.c."""
    d = Path(d)
    dns = UnboundServer(d)
    priv, txt = make_dkim_key(d, 2048, "live")
    dns.add("live.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns.add("fail.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add_txt("sel._domainkey.live.test", txt)
    dns.add("_dmarc.live.test", "TXT", "v=DMARC1; p=reject")
    dns.add("_dmarc.fail.test", "TXT", "v=DMARC1; p=reject")
    dns.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    dns.add("live.test", "MX", "20 mx2.live.test.")
    dns.add("live.test", "MX", "10 mx1.live.test.")
    dns.add("mx1.live.test", "A", "127.0.0.1")
    dns.add("mx1.live.test", "AAAA", "::1")
    dns.blackhole("slow.test")
    ta = dns.add_signed_zone("signed.test", [("signed.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")])
    msg = (b"From: Alice <alice@live.test>\r\nTo: bob@example.test\r\n"
           b"Subject: live\r\nDate: Wed, 25 Nov 2026 08:00:00 +0000\r\n"
           b"Message-ID: <live@live.test>\r\n\r\nHello there.\r\n")
    (d / "signed.eml").write_bytes(dkim_sign(msg, "sel", "live.test", priv) + msg)
    (d / "tampered.eml").write_bytes(dkim_sign(msg, "sel", "live.test", priv) +
                                     msg.replace(b"Hello", b"Jello"))
    (d / "trust-anchor").write_text(Path(ta).read_text())
    dns.start()
    (d / "port").write_text(str(dns.port))
    try:
        sys.stdout.write(f"{dns.port}\n")
        sys.stdout.flush()
        sys.stdin.read()
    finally:
        dns.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fixture":
        _fixture(sys.argv[2])
    else:
        sys.exit("usage: dnsserver.py fixture DIR")
