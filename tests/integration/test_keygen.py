"""`mxgate keygen`: the ARC seal key is made by mxgate (issue 12, "a key it
manages"), in the mode asked for, never over an existing key, and the
record it prints is the public half of that key - the same one `mxgate
dns-records` prints once [arc] names it.  The public half is derived here
independently with the openssl command."""

import base64
import grp
import os
import re
import stat
import subprocess
import time

import pytest

from mxtest import free_port, mxgate_bin, scaled
from test_check_config import base_lines, write_conf


def keygen(*args):
    p = subprocess.run([mxgate_bin(), "keygen", *map(str, args)], capture_output=True,
                       text=True, timeout=scaled(60))
    return p.returncode, p.stdout, p.stderr


def openssl_pub_der(path):
    return subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                          capture_output=True, check=True, timeout=scaled(20)).stdout


def record_p(text):
    m = re.search(r"k=(\w+); p=([A-Za-z0-9+/=]+)", text)
    assert m, text
    return m.group(1), m.group(2)


def test_rsa_key_record_is_its_public_half_and_mode_0600(workdir):
    key = workdir / "arc.key"
    rc, out, err = keygen(key)
    assert rc == 0, err
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert "BEGIN PRIVATE KEY" in key.read_text()
    k, p = record_p(out)
    assert k == "rsa"
    assert base64.b64decode(p) == openssl_pub_der(key)
    bits = subprocess.run(["openssl", "pkey", "-in", str(key), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "2048 bit" in bits, bits.splitlines()[0]
    assert "publish" in err and str(key) in err


def test_ed25519_key_with_group_is_0640(workdir):
    key = workdir / "ed.key"
    group = grp.getgrgid(os.getgid() if os.getgid() != 0 else 65534).gr_name
    rc, out, err = keygen("--algorithm", "ed25519-sha256", "--group", group, key)
    assert rc == 0, err
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert grp.getgrgid(st.st_gid).gr_name == group
    k, p = record_p(out)
    assert k == "ed25519"
    # RFC 8463 3: the record carries the raw 32-byte key, the last 32 bytes
    # of the SubjectPublicKeyInfo openssl prints
    assert base64.b64decode(p) == openssl_pub_der(key)[-32:]


def test_existing_key_is_never_replaced(workdir):
    key = workdir / "arc.key"
    key.write_text("the operator's key\n")
    rc, out, err = keygen(key)
    assert rc == 1
    assert out == ""
    assert "left alone" in err and "selector" in err
    assert key.read_text() == "the operator's key\n"


@pytest.mark.parametrize("args", [["--bits", "512"], ["--bits", "x"],
                                  ["--algorithm", "dsa"], ["--group", "no-such-group-x"], []])
def test_bad_arguments_are_usage_errors(workdir, args):
    key = workdir / "k.pem"
    rc, out, err = keygen(*args, *([key] if args else []))
    assert rc == 2, (rc, err)
    assert not key.exists()
    assert err.strip()


def test_check_config_then_keygen_then_dns_records(workdir):
    """The workflow the guide gives: check-config names the missing key,
    keygen makes it, check-config passes, dns-records prints the record
    keygen printed under the configured selector and domain."""
    key = workdir / "seal.key"
    lines = base_lines(workdir, free_port()) + [
        "[arc]", "enabled = yes", "seal = yes", "selector = arc2026",
        "domain = example.test", f"key_file = {key}", ""]
    conf = write_conf(workdir, lines)
    p = subprocess.run([mxgate_bin(), "check-config", "-c", str(conf)], capture_output=True,
                       text=True, timeout=scaled(20))
    assert p.returncode == 2 and "key_file" in p.stderr and "mxgate keygen" in p.stderr, \
        p.stderr
    rc, out, err = keygen(key)
    assert rc == 0, err
    p = subprocess.run([mxgate_bin(), "check-config", "-c", str(conf)], capture_output=True,
                       text=True, timeout=scaled(20))
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([mxgate_bin(), "dns-records", "-c", str(conf)], capture_output=True,
                       text=True, timeout=scaled(20))
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("arc2026._domainkey."))
    assert line.startswith("arc2026._domainkey.example.test.\t")
    txt = "".join(re.findall(r'"([^"]*)"', line))
    assert record_p(txt) == record_p(out)


def test_group_is_set_on_the_created_file_not_a_swapped_path(workdir):
    """Red team: whoever can write the key's folder swaps the new file for a
    symlink while the (slow) RSA generation runs; a chown by name would
    then hand the symlink's target to the group.  The group and mode are
    set on the open file, before the generation, and the record comes from
    the key in memory."""
    d = workdir / "keys"
    d.mkdir()
    victim = workdir / "victim"
    victim.write_text("secret\n")
    os.chmod(victim, 0o640)
    gid0 = victim.stat().st_gid
    group = grp.getgrgid(65534).gr_name
    key = d / "arc.pem"
    p = subprocess.Popen([mxgate_bin(), "keygen", "--bits", "4096", "--group", group, str(key)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    swapped = False
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline and p.poll() is None:
        if key.exists() and not key.is_symlink():
            os.rename(key, d / "real.pem")
            os.symlink(victim, key)
            swapped = True
            break
        time.sleep(0.001)
    out, err = p.communicate(timeout=scaled(120))
    if not swapped:
        pytest.skip("keygen finished before the swap could be made")
    assert victim.stat().st_gid == gid0, "the group followed the swapped-in symlink"
    assert victim.read_text() == "secret\n"
    real = d / "real.pem"
    assert grp.getgrgid(real.stat().st_gid).gr_name == group
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert p.returncode == 0, err
    k, pub = record_p(out)
    assert k == "rsa" and base64.b64decode(pub) == openssl_pub_der(real)
