"""Downstream TLS and AUTH: STARTTLS verified against a test CA made at test
time (by IP address and by host name through the resolver), host-name
mismatch refused under `verify` but accepted under `encrypt`, STARTTLS
required but not offered, `tls = none`, SMTP AUTH from an auth_file.
"""

import os

import pytest

import mxtest
from downstream import Downstream, relay_extra
from mxtest import make_message, make_test_ca, scaled, wait_for

SENDER = "sender@example.test"


def _deliver(gw, ds):
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    return qid, marker


def test_starttls_verified_by_ip(gateway, workdir):
    ca = make_test_ca(workdir, hostnames=("downstream.test",), ips=("127.0.0.1",), name="dsip")
    with Downstream(tls=ca) as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="verify", ca_file=ca.ca_cert))
        qid, marker = _deliver(gw, ds)
        wait_for(lambda: ds.find(marker), scaled(10), what="delivery over TLS")
        [rec] = ds.find(marker)
        assert rec.tls
        gw.wait_log(qid + r" to=<a@example.test> .*tls=TLSv1\.[23] .*status=sent")


def test_starttls_verified_by_name_and_mismatch_refused(gateway, workdir):
    ca = make_test_ca(workdir, hostnames=("downstream.test",), ips=(), name="dsname")
    with Downstream(tls=ca) as ds:
        gw = gateway(relay_extra([f"downstream.test:{ds.port}"], tls="verify",
                                 ca_file=ca.ca_cert))
        gw.dns.add("downstream.test", "A", "127.0.0.1")
        gw.dns.add("wrong.test", "A", "127.0.0.1")
        qid, marker = _deliver(gw, ds)
        wait_for(lambda: ds.find(marker), scaled(10), what="delivery to downstream.test")
        assert ds.find(marker)[0].tls

    # same certificate, reached under another name: refused, nothing sent
    with Downstream(tls=ca) as ds2:
        gw2 = gateway(relay_extra([f"wrong.test:{ds2.port}"], tls="verify", ca_file=ca.ca_cert))
        gw2.dns.add("wrong.test", "A", "127.0.0.1")
        qid, marker = _deliver(gw2, ds2)
        gw2.wait_log(qid + r" to=<a@example.test> .*status=deferred .*certificate verification "
                     r"failed", scaled(10))
        assert not ds2.messages
        assert "mail" not in ds2.events   # refused before any MAIL FROM


def test_ip_mismatch_refused_under_verify_accepted_under_encrypt(gateway, workdir):
    ca = make_test_ca(workdir, hostnames=("other.test",), ips=(), name="other")
    with Downstream(tls=ca) as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="verify", ca_file=ca.ca_cert))
        qid, marker = _deliver(gw, ds)
        gw.wait_log(qid + r" .*status=deferred .*certificate verification failed", scaled(10))
        assert not ds.messages
        gw.stop()
    with Downstream(tls=ca) as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="encrypt"))
        qid, marker = _deliver(gw, ds)
        wait_for(lambda: ds.find(marker), scaled(10), what="delivery under tls=encrypt")
        assert ds.find(marker)[0].tls


def test_untrusted_ca_refused(gateway, workdir):
    ca = make_test_ca(workdir / "a", hostnames=("downstream.test",), ips=("127.0.0.1",))
    other = make_test_ca(workdir / "b", hostnames=("downstream.test",), ips=("127.0.0.1",))
    with Downstream(tls=ca) as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="verify", ca_file=other.ca_cert))
        qid, marker = _deliver(gw, ds)
        gw.wait_log(qid + r" .*status=deferred .*certificate verification failed", scaled(10))
        assert not ds.messages


def test_starttls_required_but_not_offered(gateway):
    with Downstream() as ds:
        ds.offer_starttls = False
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="encrypt"))
        qid, marker = _deliver(gw, ds)
        gw.wait_log(qid + r" .*status=deferred .*STARTTLS required", scaled(10))
        assert not ds.messages


def test_tls_none_stays_plaintext(gateway, workdir):
    ca = make_test_ca(workdir, hostnames=("downstream.test",), ips=("127.0.0.1",))
    with Downstream(tls=ca) as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="none"))
        qid, marker = _deliver(gw, ds)
        wait_for(lambda: ds.find(marker), scaled(10), what="plaintext delivery")
        assert not ds.find(marker)[0].tls


@pytest.mark.parametrize("how", ["auth_file", "inline"])
def test_auth_plain_over_tls(gateway, workdir, how):
    ca = make_test_ca(workdir, hostnames=("downstream.test",), ips=("127.0.0.1",))
    with Downstream(tls=ca, auth=("relayuser", "s3cret:pw")) as ds:
        route = {}
        if how == "auth_file":
            f = workdir / "relay.auth"
            f.write_text("relayuser:s3cret:pw\n")
            os.chmod(f, 0o600)
            route["auth_file"] = str(f)
        else:
            route.update(auth_user="relayuser", auth_password="s3cret:pw")
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="verify", ca_file=ca.ca_cert,
                                 route=route))
        qid, marker = _deliver(gw, ds)
        wait_for(lambda: ds.find(marker), scaled(10), what="authenticated delivery")
        assert ds.find(marker)[0].login == "relayuser"
        assert "s3cret" not in gw.log_text()


def test_auth_failure_defers(gateway, workdir):
    ca = make_test_ca(workdir, hostnames=("downstream.test",), ips=("127.0.0.1",))
    with Downstream(tls=ca, auth=("relayuser", "right")) as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="encrypt",
                                 route={"auth_user": "relayuser", "auth_password": "wrong"}))
        qid, marker = _deliver(gw, ds)
        gw.wait_log(qid + r" .*status=deferred .*authentication failed", scaled(10))
        assert not ds.messages


def test_readable_auth_file_refused(gateway, workdir):
    ca = make_test_ca(workdir, hostnames=("downstream.test",), ips=("127.0.0.1",))
    with Downstream(tls=ca, auth=("relayuser", "pw")) as ds:
        f = workdir / "relay.auth"
        f.write_text("relayuser:pw\n")
        os.chmod(f, 0o644)
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], tls="encrypt",
                                 route={"auth_file": str(f)}))
        qid, marker = _deliver(gw, ds)
        gw.wait_log(qid + r" .*status=deferred .*group/world accessible", scaled(10))
        assert not ds.messages
