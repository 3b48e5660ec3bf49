"""WorkMail junk-folder Lambda (deploy/aws/workmail-junk, issue 13 part c)
on real messages produced by mxgate: mxgate (SPF/DKIM/DMARC on, a real DNS
server on loopback) judges and delivers them to a directory; the Lambda
handler then fetches each one through boto3's workmailmessageflow client
from a loopback HTTP endpoint that implements GetRawMessageContent
(GET /messages/{messageId}) and answers WorkMail's action contract."""

import base64
import http.server
import importlib.util
import os
import threading
from pathlib import Path

import pytest

import mxtest
from test_scan_rspamd import Rspamd

RCPT = "user@example.test"
AUTHSERV = "mx.example.test"


@pytest.fixture(scope="module")
def rspamd():
    r = Rspamd().start()
    yield r
    r.stop()


def load_lambda():
    p = Path(mxtest.source_dir()) / "deploy/aws/workmail-junk/lambda_function.py"
    spec = importlib.util.spec_from_file_location("workmail_junk", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class WorkMailFlow:
    """GetRawMessageContent on 127.0.0.1: messages by id; logs requests."""

    def __init__(self):
        self.messages, self.requests = {}, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Authorization", "")))
                mid = self.path.rsplit("/", 1)[-1]
                body = outer.messages.get(mid)
                if body is None or not self.path.startswith("/messages/"):
                    data = b'{"message":"not found"}'
                    self.send_response(404)
                    self.send_header("x-amzn-ErrorType", "ResourceNotFoundException")
                else:
                    data = body
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def flow(monkeypatch):
    f = WorkMailFlow()
    monkeypatch.setenv("WORKMAIL_ENDPOINT_URL", f.url)
    monkeypatch.setenv("MXGATE_AUTHSERV_ID", AUTHSERV)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    yield f
    f.close()


@pytest.fixture
def stub_dns():
    """good.test passes SPF and DMARC, bad.test fails DMARC (p=quarantine)."""
    dns = mxtest.StubDns()
    dns.add("good.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    dns.add("_dmarc.good.test", "TXT", '"v=DMARC1; p=none"')
    dns.add("bad.test", "TXT", '"v=spf1 -all"')
    dns.add("_dmarc.bad.test", "TXT", '"v=DMARC1; p=quarantine"')
    dns.start()
    yield dns
    dns.stop()


def judging_gw(gateway, dns, **sections):
    """mxgate with SPF/DMARC on (stub_dns) and the given extra sections."""
    extra = {"auth": {"spf": "yes", "dkim": "no", "dmarc": "yes"},
             "dns": {"forwarders": f"127.0.0.1@{dns.port}", "timeout": "1s"}}
    extra.update(sections)
    return gateway(extra, dns=False)


@pytest.fixture
def judged(gateway, stub_dns):
    """mxgate with SPF/DMARC: good.test passes, bad.test fails DMARC."""
    return judging_gw(gateway, stub_dns)


def through_mxgate(gw, sender, headers=(), body=None):
    kw = {"body": body} if body is not None else {}
    data, marker = mxtest.make_message("lambda", sender=sender, headers=headers, **kw)
    gw.send(sender, [RCPT], data)
    return gw.wait_for_marker(marker)


def run(mod, flow, raw, mid):
    flow.messages[mid] = raw
    event = {"messageId": mid, "flowDirection": "INBOUND", "orgId": "m-0123456789",
             "subject": "x", "envelope": {"mailFrom": {"address": "a@b"},
                                          "recipients": [{"address": RCPT}]}}
    return mod.lambda_handler(event, None)


def action(resp):
    assert list(resp) == ["actions"] and len(resp["actions"]) == 1, resp
    a = resp["actions"][0]
    assert a["allRecipients"] is True, a
    return a["action"]["type"]


def test_verdicts_of_real_mxgate_messages(judged, flow):
    mod = load_lambda()
    spam = through_mxgate(judged, "someone@bad.test")
    assert mxtest.header_values(spam, "X-Spam-Flag")[0].startswith("YES"), spam[:800]
    assert action(run(mod, flow, spam, "11111111-aaaa")) == "MOVE_TO_JUNK"
    ham = through_mxgate(judged, "someone@good.test")
    assert mxtest.header_values(ham, "X-Spam-Flag")[0].startswith("NO"), ham[:800]
    assert action(run(mod, flow, ham, "22222222-bbbb")) == "BYPASS_SPAM_CHECK"
    # the API was really called, signed with the function's credentials
    assert [p for p, _ in flow.requests] == ["/messages/11111111-aaaa", "/messages/22222222-bbbb"]
    assert all(a.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") for _, a in flow.requests)


def test_forged_verdicts_are_not_trusted(judged, flow):
    mod = load_lambda()
    # a sender writes mxgate's headers itself: mxgate drops them on the way in
    forged = through_mxgate(judged, "someone@bad.test", headers=(
        f"Authentication-Results: {AUTHSERV}; dmarc=pass", "X-Spam-Flag: NO"))
    assert action(run(mod, flow, forged, "33333333")) == "MOVE_TO_JUNK"
    # a message that did not come through mxgate (or whose topmost A-R is
    # another server's) is WorkMail's to judge
    other = (b"Authentication-Results: other.example; spf=pass\r\n"
             b"Authentication-Results: " + AUTHSERV.encode() + b"; dmarc=pass\r\n"
             b"X-Spam-Flag: NO\r\nSubject: x\r\n\r\nhi\r\n")
    assert action(run(mod, flow, other, "44444444")) == "DEFAULT"
    assert action(run(mod, flow, b"Subject: none\r\n\r\nhi\r\n", "55555555")) == "DEFAULT"


SES_AR = (b"Received: from mx.example.test (mx.example.test [192.0.2.1])\r\n"
          b" by inbound-smtp.eu-west-1.amazonaws.com with SMTP id abc\r\n"
          b" for user@example.test; Wed, 02 Dec 2026 12:00:00 +0000 (UTC)\r\n"
          b"X-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\n"
          b"Authentication-Results: amazonses.com;\r\n"
          b" spf=pass (spfCheck: domain of example.test designates 192.0.2.1 as permitted"
          b" sender) client-ip=192.0.2.1;\r\n dkim=pass header.i=@good.test;\r\n"
          b" dmarc=pass header.from=good.test;\r\n")


def test_through_ses_inbound_as_workmail_sees_it(judged, flow):
    """Red team: WorkMail gets mxgate's mail through SES inbound, which
    prepends its own "Authentication-Results: amazonses.com" above mxgate's.
    The function answered DEFAULT for every such message (the junk folder
    never filled).  mxgate's verdict must still be read below SES's field -
    and a second amazonses.com field (a sender's) must not open the way for
    a forged mxgate one."""
    mod = load_lambda()
    spam = SES_AR + through_mxgate(judged, "someone@bad.test")
    assert action(run(mod, flow, spam, "77777777")) == "MOVE_TO_JUNK"
    ham = SES_AR + through_mxgate(judged, "someone@good.test")
    assert action(run(mod, flow, ham, "88888888")) == "BYPASS_SPAM_CHECK"
    forged = (SES_AR + b"Authentication-Results: amazonses.com; spf=pass\r\n"
              b"Authentication-Results: " + AUTHSERV.encode() + b"; dmarc=pass\r\n"
              b"X-Spam-Flag: NO\r\nSubject: x\r\n\r\nhi\r\n")
    assert action(run(mod, flow, forged, "99999999")) == "DEFAULT"


def test_bypass_off_and_api_failure(judged, flow, monkeypatch):
    mod = load_lambda()
    ham = through_mxgate(judged, "someone@good.test")
    monkeypatch.setenv("BYPASS_ON_CLEAN", "no")
    assert action(run(mod, flow, ham, "66666666")) == "DEFAULT"
    # the message cannot be fetched (unknown id): never hold up mail
    resp = mod.lambda_handler({"messageId": "missing"}, None)
    assert action(resp) == "DEFAULT"


def test_rspamd_verdicts(gateway, stub_dns, flow, rspamd):
    """rspamd judged the content: its verdict (X-Spam-Status ...
    scanner=rspamd) decides - tagged spam to Junk, ham bypasses WorkMail's
    filter."""
    from test_scan_rspamd import GTUBE
    mod = load_lambda()
    gw = judging_gw(gateway, stub_dns, rspamd={"address": f"127.0.0.1:{rspamd.port}",
                                               "timeout": "10s", "reject_action": "tag"})
    spam = through_mxgate(gw, "someone@good.test", body=GTUBE + "\r\n")
    assert "scanner=rspamd" in mxtest.header_values(spam, "X-Spam-Status")[0]
    assert action(run(mod, flow, spam, "r1")) == "MOVE_TO_JUNK"
    ham = through_mxgate(gw, "someone@good.test")
    assert "scanner=rspamd" in mxtest.header_values(ham, "X-Spam-Status")[0]
    assert mxtest.header_values(ham, "X-Spam-Flag") == ["NO"]
    assert action(run(mod, flow, ham, "r2")) == "BYPASS_SPAM_CHECK"
    gw.stop()
    # monitoring: reject_action = deliver delivers GTUBE unflagged, but
    # rspamd's verdict is in the status - WorkMail's filter must still run
    gw = judging_gw(gateway, stub_dns, rspamd={"address": f"127.0.0.1:{rspamd.port}",
                                               "timeout": "10s", "reject_action": "deliver"})
    spam = through_mxgate(gw, "someone@good.test", body=GTUBE + "\r\n")
    assert mxtest.header_values(spam, "X-Spam-Flag") == ["NO"]
    assert 'action="reject"' in mxtest.header_values(spam, "X-Spam-Status")[0]
    assert action(run(mod, flow, spam, "r3")) == "DEFAULT"


def test_unchecked_content_is_left_to_workmail(gateway, stub_dns, flow):
    """Red team: rspamd and clamd down, both with on_failure = accept.
    mxgate delivers with its own X-Spam-Flag: NO plus X-Spam-Checker:
    unchecked and X-Virus-Scan: unscanned; the function answered
    BYPASS_SPAM_CHECK (skip WorkMail's filter) for mail no content filter
    had checked.  Now DEFAULT - unless mxgate's own verdict flagged it."""
    mod = load_lambda()
    down = f"127.0.0.1:{mxtest.free_port()}"
    gw = judging_gw(gateway, stub_dns, rspamd={"address": down, "on_failure": "accept"})
    ham = through_mxgate(gw, "someone@good.test")
    assert mxtest.header_values(ham, "X-Spam-Flag") == ["NO"]
    assert mxtest.header_values(ham, "X-Spam-Checker")[0].startswith("unchecked;")
    assert action(run(mod, flow, ham, "u1")) == "DEFAULT"
    # mxgate's own verdict still flags what it can judge alone
    spam = through_mxgate(gw, "someone@bad.test")
    assert mxtest.header_values(spam, "X-Spam-Checker")[0].startswith("unchecked;")
    assert action(run(mod, flow, spam, "u2")) == "MOVE_TO_JUNK"
    gw.stop()
    gw = judging_gw(gateway, stub_dns, clamav={"socket": down, "on_failure": "accept"})
    ham = through_mxgate(gw, "someone@good.test")
    assert mxtest.header_values(ham, "X-Virus-Scan")[0].startswith("unscanned;")
    assert mxtest.header_values(ham, "X-Spam-Flag") == ["NO"]
    assert action(run(mod, flow, ham, "u3")) == "DEFAULT"


def test_released_from_quarantine(gateway, stub_dns, flow):
    """A message the postmaster released from mxgate's quarantine (here a
    blocked attachment from a sender that passes DMARC) was held, not
    judged clean: never BYPASS_SPAM_CHECK.  The quarantine flagged it
    (X-Spam-Flag: YES, like every quarantine verdict) and its attachment
    was blocked: Junk.  A released message that is not flagged (quarantined
    by an older mxgate) is WorkMail's to judge."""
    mod = load_lambda()
    gw = judging_gw(gateway, stub_dns, attachments={"enabled": "yes", "action": "quarantine"})
    data, marker = mxtest.make_message("lambda", sender="someone@good.test", headers=(
        "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b"),
        body="--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
             "Content-Type: application/octet-stream\r\n"
             "Content-Disposition: attachment; filename=tool.exe\r\n\r\nMZ\r\n--b--\r\n")
    with gw.client() as c:
        c.ehlo()
        qid = mxtest.queued_id(c.transaction("someone@good.test", [RCPT], data))
    gw.wait_log(r"quarantined reason=attachment id=" + qid)
    gw.cli("quarantine", "release", qid, check=True)
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "X-Mxgate-Released")
    assert mxtest.header_values(msg, "X-Spam-Flag") == ["YES"]
    assert action(run(mod, flow, msg, "q1")) == "MOVE_TO_JUNK"
    old = (b"Authentication-Results: " + AUTHSERV.encode() + b"; dmarc=pass\r\n"
           b"X-Spam-Flag: NO\r\nX-Mxgate-Released: by=root; at=x\r\nSubject: x\r\n\r\nhi\r\n")
    assert mod.verdict(old, AUTHSERV) == ("DEFAULT", "released from quarantine")


EXE = base64.b64encode(b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + b"\x00" * 200).decode()


def exe_message(pad=0, boundary=True):
    """invoice.exe (a PE), behind pad bytes of text; without a boundary
    parameter the MIME can only be read by guessing."""
    ct = 'multipart/mixed; boundary="b1"' if boundary else "multipart/mixed"
    body = ("--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            + ("x" * 76 + "\r\n") * (pad // 78)
            + "--b1\r\nContent-Type: application/octet-stream; name=\"invoice.exe\"\r\n"
              "Content-Disposition: attachment; filename=\"invoice.exe\"\r\n"
              "Content-Transfer-Encoding: base64\r\n\r\n" + EXE + "\r\n--b1--\r\n")
    return mxtest.make_message("invoice", sender="someone@good.test", body=body,
                               headers=("MIME-Version: 1.0", f"Content-Type: {ct}"))


ATTACH_CASES = {
    # padded past an explicit max_size: not judged, delivered (oversize_action
    # follows unparsable_action = deliver) with "unchecked; reason=size"
    "over-max-size": ({"max_size": "64K"}, 100_000, True, "unchecked; reason=size",
                      "NO", "DEFAULT"),
    # MIME GMime reads only by guessing: unparsable_action = deliver
    "no-boundary": ({}, 0, False, "unchecked; reason=unparsable", "NO", "DEFAULT"),
    # judged and blocked, let through by the postmaster's action: Junk
    "blocked-tag": ({"action": "tag"}, 0, True, "blocked; verdict=", "YES", "MOVE_TO_JUNK"),
    "blocked-deliver": ({"action": "deliver"}, 0, True, "blocked; verdict=", "NO",
                        "MOVE_TO_JUNK"),
}


@pytest.mark.parametrize("case", sorted(ATTACH_CASES))
def test_attachments_not_passed_are_not_bypassed(gateway, stub_dns, flow, case):
    """Red team: a blocked .exe mxgate did not judge (padded past max_size,
    MIME without a boundary) or let through ([attachments] action = tag or
    deliver) arrived with X-Spam-Flag: NO from a sender passing DMARC, and
    the function answered BYPASS_SPAM_CHECK: WorkMail's filter was skipped
    for exactly the mail mxgate had not passed.  Any X-Mxgate-Attachments
    field now keeps WorkMail's filter on (blocked: Junk)."""
    cfg, pad, boundary, state, flag, want = ATTACH_CASES[case]
    mod = load_lambda()
    gw = judging_gw(gateway, stub_dns, attachments=dict({"enabled": "yes"}, **cfg))
    data, marker = exe_message(pad=pad, boundary=boundary)
    gw.send("someone@good.test", [RCPT], data)
    m = gw.wait_for_marker(marker)
    assert mxtest.header_values(m, "X-Mxgate-Attachments")[0].startswith(state), m[:1500]
    assert mxtest.header_values(m, "X-Spam-Flag") == [flag]
    # the policy's own status agrees with the flag
    assert mxtest.header_values(m, "X-Spam-Status")[0].startswith(flag.capitalize() + ",")
    assert "dmarc=pass" in mxtest.header_values(m, "Authentication-Results")[0]
    assert action(run(mod, flow, m, "a1")) == want


def test_own_dmarc_quarantine_flagged_with_rspamd_on(gateway, stub_dns, flow, rspamd):
    """Red team: with rspamd on, mxgate's own DMARC p=quarantine verdict
    (dmarc_quarantine_action = tag) tagged the Subject, but rspamd's
    "no action" (its total under add_header: modest [spam] weights here,
    ham symbols in production) wrote X-Spam-Flag: NO over the policy's YES,
    and the function answered BYPASS_SPAM_CHECK.  The flag is YES whenever
    one of mxgate's own verdicts tagged or quarantined; X-Spam-Status keeps
    rspamd's verdict."""
    mod = load_lambda()
    gw = judging_gw(gateway, stub_dns,
                    rspamd={"address": f"127.0.0.1:{rspamd.port}", "timeout": "10s"},
                    spam={"weight_spf_fail": "0.5", "weight_dmarc_quarantine": "1"})
    m = through_mxgate(gw, "someone@bad.test")
    ar = mxtest.header_values(m, "Authentication-Results")[0]
    assert "dmarc=fail" in ar and "dis=quarantine" in ar, ar
    st = " ".join(mxtest.header_values(m, "X-Spam-Status")[0].split())
    assert 'action="no action" scanner=rspamd' in st, st
    assert mxtest.header_values(m, "Subject")[0].startswith("[SPAM] ")
    assert mxtest.header_values(m, "X-Spam-Flag") == ["YES"]
    assert action(run(mod, flow, m, "q1")) == "MOVE_TO_JUNK"


def test_infected_is_never_bypassed_nor_junked():
    """virus_action = deliver (or a released virus): X-Virus-Scan: infected
    under mxgate's A-R.  WorkMail's own virus handling decides (DEFAULT),
    whatever the spam flag says (a real message needs clamd: see
    test_scan_clamav.py for the header mxgate writes)."""
    mod = load_lambda()
    for flag in (b"NO", b"YES"):
        raw = (b"Authentication-Results: " + AUTHSERV.encode() + b"; dmarc=pass\r\n"
               b"X-Virus-Scan: infected; virus=Eicar-Test-Signature; scanner=clamav;"
               b" by=" + AUTHSERV.encode() + b"\r\nX-Spam-Flag: " + flag +
               b"\r\nSubject: x\r\n\r\nhi\r\n")
        assert mod.verdict(raw, AUTHSERV) == ("DEFAULT", "X-Virus-Scan: infected"), flag
    clean = raw.replace(b"infected; virus=Eicar-Test-Signature;", b"clean;")
    assert mod.verdict(clean, AUTHSERV)[0] == "MOVE_TO_JUNK"
    assert mod.verdict(clean.replace(b"Flag: YES", b"Flag: NO"), AUTHSERV)[0] == \
        "BYPASS_SPAM_CHECK"


def test_template_wires_function_role_and_permission():
    import re

    import yaml
    from test_deploy import cfn_loader
    p = Path(mxtest.source_dir()) / "deploy/aws/workmail-junk/template.yaml"
    t = yaml.load(p.read_text(), Loader=cfn_loader())
    res, params = t["Resources"], t["Parameters"]
    fn = res["JunkFunction"]["Properties"]
    assert fn["Handler"] == "lambda_function.lambda_handler"
    assert fn["Runtime"].startswith("python3")
    env = fn["Environment"]["Variables"]
    assert env["MXGATE_AUTHSERV_ID"] == {"Ref": "MxgateAuthservId"}
    assert set(env) == {"MXGATE_AUTHSERV_ID", "SPAM_FLAG_HEADER", "BYPASS_ON_CLEAN",
                        "DOWNSTREAM_AUTHSERV_IDS", "SPAM_STATUS_HEADER"}
    assert params["DownstreamAuthservIds"]["Default"] == "amazonses.com"
    # every variable the function reads (but the test-only endpoint) is set
    src = (p.parent / "lambda_function.py").read_text()
    read = set(re.findall(r'os\.environ(?:\.get\(|\[)"([A-Z_]+)"', src))
    assert read - set(env) == {"WORKMAIL_ENDPOINT_URL"}, read
    stmt = res["JunkFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert stmt["Action"] == "workmailmessageflow:GetRawMessageContent"
    assert "${WorkMailOrganizationId}" in stmt["Resource"]["Fn::Sub"]
    perm = res["WorkMailInvokePermission"]["Properties"]
    assert perm["Principal"] == {"Fn::Sub": "workmail.${AWS::Region}.amazonaws.com"}
    assert perm["FunctionName"] == {"Ref": "JunkFunction"}
    refs = re.findall(r"\{'Ref': '(\w+)'\}", repr(res))
    subs = re.findall(r"\$\{(\w+)\}", repr(res))
    for name in set(refs + subs) - {"JunkFunction"}:
        assert name in params or name in res, name
