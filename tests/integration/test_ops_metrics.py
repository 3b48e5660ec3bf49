"""Metrics you can alert on and delivery lines you can read (issue 16):
every labelled series the postmaster guide recommends alerting on exists
from start-up at 0; per-route delivery counters and time; queue size by
state; the server certificate's expiry; mxgate_build_info; process CPU,
memory and descriptors.  A delivery line's delay= is the time since
arrival, with delays=queue/connect/transfer and the route."""

import re
import ssl
import subprocess

import mxtest
from downstream import Downstream, relay_extra
from mxtest import free_port, make_message, mxgate_bin, scaled, wait_for
from test_production_observe import parse_metrics, scrape

SENDER = "sender@example.test"

# (family, labels) the guide's alerts and dashboards use
ALERT_SERIES = [
    ("mxgate_config_reloads_total", 'result="failed"'),
    ("mxgate_config_reloads_total", 'result="ok"'),
    ("mxgate_dmarc_results_total", 'result="fail"'),
    ("mxgate_delivery_attempts_total", 'outcome="deferred"'),
    ("mxgate_delivery_attempts_total", 'outcome="bounced"'),
    ("mxgate_queue_envelope_errors_total", 'error="corrupt"'),
    ("mxgate_connections_refused_total", 'reason="max_connections"'),
    ("mxgate_accept_pauses_total", 'error="EMFILE"'),
    ("mxgate_messages_rejected_total", 'reason="policy"'),
    ("mxgate_spam_verdicts_total", 'verdict="spam"'),
    ("mxgate_policy_actions_total", 'action="tempfail"'),
    ("mxgate_queue_messages_by_state", 'state="active"'),
    ("mxgate_queue_messages_by_state", 'state="deferred"'),
    ("mxgate_queue_messages_by_state", 'state="hold"'),
    ("mxgate_queue_messages_by_state", 'state="quarantine"'),
    ("mxgate_route_delivered_total", 'route="default"'),
    ("mxgate_route_deferred_total", 'route="default"'),
    ("mxgate_route_bounced_total", 'route="default"'),
    ("mxgate_route_delivery_seconds_total", 'route="default"'),
]


def metrics(port):
    status, _, body = scrape(port)
    assert status == 200
    return parse_metrics(body)


def test_alertable_series_exist_at_start(gateway, test_ca):
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}"}}, tls=test_ca)
    m = metrics(mport)
    for name, labels in ALERT_SERIES:
        assert m.get((name, "{" + labels + "}")) == 0, (name, labels)
    version = subprocess.run([mxgate_bin(), "version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert m[("mxgate_build_info", '{version="%s"}' % version)] == 1
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds"):
        assert m[(name, "")] > 0, name
    assert ("process_cpu_seconds_total", "") in m
    # the certificate's notAfter, as openssl reads it
    end = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", test_ca.cert],
                         capture_output=True, text=True, check=True).stdout.strip()
    not_after = ssl.cert_time_to_seconds(end.split("=", 1)[1])
    assert m[("mxgate_tls_certificate_expiry_timestamp_seconds", "")] == not_after
    # one delivery through the default (directory) route is counted there
    data, marker = make_message()
    gw.send("sender@client.example.net", ["user@example.test"], data)
    gw.wait_for_marker(marker)
    wait_for(lambda: metrics(mport)[("mxgate_route_delivered_total", '{route="default"}')] == 1,
             scaled(5), what="route counter")
    m = metrics(mport)
    assert m[("mxgate_route_deferred_total", '{route="default"}')] == 0
    assert m[("mxgate_route_delivery_seconds_total", '{route="default"}')] >= 0


def test_delay_since_arrival_and_queue_by_state(gateway):
    port = mxtest.closed_port()
    mport = free_port()
    extra = relay_extra([f"127.0.0.1:{port}"], queue={"retry_schedule": "1s"})
    extra["metrics"] = {"listen": f"127.0.0.1:{mport}"}
    gw = gateway(extra)
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["a@example.test"], data)
    gw.wait_log(qid + r" to=<a@example.test> route=default .* status=deferred")
    wait_for(lambda: metrics(mport)[("mxgate_queue_messages_by_state", '{state="deferred"}')]
             == 1, scaled(5), what="deferred gauge")
    m = metrics(mport)
    assert m[("mxgate_route_deferred_total", '{route="default"}')] >= 1
    with Downstream(port=port) as ds:
        wait_for(lambda: ds.find(marker), scaled(15), what="delivered after the retry")
    gw.wait_log(qid + r" to=<a@example.test> route=default .*status=sent")
    text = gw.log_text()
    sent = [ln for ln in text.splitlines() if qid in ln and "status=sent" in ln][0]
    mm = re.search(r" delay=([\d.]+) delays=([\d.]+)/([\d.]+)/([\d.]+) ", sent)
    assert mm, sent
    delay, q, c, t = (float(x) for x in mm.groups())
    # delay counts from arrival: the message waited in the queue for its
    # retry (retry_schedule 1s), which the first part of delays shows
    assert q >= 1 and delay >= q, sent
    assert abs(delay - (q + c + t)) <= 0.15, sent
    wait_for(lambda: metrics(mport)[("mxgate_route_delivered_total", '{route="default"}')] == 1,
             scaled(5), what="route delivered counter")


def test_quarantine_gauges_follow_at_once(gateway):
    """mxgate_quarantine_messages/_bytes/_oldest_age_seconds count a message
    as soon as it is quarantined and drop it as soon as it is released or
    deleted - they used to change only at the retention sweep (hourly with
    the default 30 days), so a scrape right after showed 0."""
    mport = free_port()
    gw = gateway({"metrics": {"listen": f"127.0.0.1:{mport}"},
                  "attachments": {"enabled": "yes", "action": "quarantine"}})

    def quarantine():
        data, _ = make_message("q", headers=(
            "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b"),
            body="--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Disposition: attachment; filename=tool.exe\r\n\r\nMZ\r\n--b--\r\n")
        with gw.client() as c:
            c.ehlo()
            qid = mxtest.queued_id(c.transaction("sender@client.example.net",
                                                 ["user@example.test"], data))
        gw.wait_log(r"quarantined reason=attachment id=" + qid)
        return qid

    def gauge(name):
        return metrics(mport)[(name, "")]

    assert gauge("mxgate_quarantine_messages") == 0
    qid = quarantine()
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 1, scaled(5),
             what="quarantine gauge 1")
    m = metrics(mport)
    assert m[("mxgate_quarantine_bytes", "")] > 0
    assert m[("mxgate_quarantine_oldest_age_seconds", "")] >= 0
    assert m[("mxgate_queue_messages_by_state", '{state="quarantine"}')] == 1
    gw.cli("quarantine", "release", qid, check=True)
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 0, scaled(5),
             what="quarantine gauge 0 after the release")
    assert gauge("mxgate_quarantine_bytes") == 0
    qid = quarantine()
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 1, scaled(5),
             what="quarantine gauge 1 again")
    gw.cli("quarantine", "delete", qid, check=True)
    wait_for(lambda: gauge("mxgate_quarantine_messages") == 0, scaled(5),
             what="quarantine gauge 0 after the delete")
    assert gauge("mxgate_quarantine_bytes") == 0
    assert gauge("mxgate_quarantine_oldest_age_seconds") == 0
