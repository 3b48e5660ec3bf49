"""External-sender warning (issue 13, part a): [warning] subject tag and
body banner on real messages through the real binary, delivered to a
directory route; every MIME shape the issue names, byte-exact elsewhere,
never twice, signed/encrypted bodies left alone."""

import base64
import email
import email.policy
import uuid

import mxtest

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
TEXT = "CAUTION: external sender, take care."
HTML = "<b>CAUTION</b>: external sender."


def warn_gw(gateway, **kw):
    w = {"enabled": "yes", "subject_tag": "[EXT]", "banner_text": TEXT, "banner_html": HTML}
    w.update({k: str(v) for k, v in kw.items()})
    return gateway({"warning": w})


def message(body_headers, body, sender=SENDER, extra=()):
    marker = "m" + uuid.uuid4().hex[:16]
    hdr = [f"From: Someone <{sender}>", f"To: <{RCPT}>", f"Subject: hello {marker}",
           f"Message-ID: <{marker}@client.example.net>", "MIME-Version: 1.0", *extra,
           *body_headers]
    return ("\r\n".join(hdr) + "\r\n\r\n").encode() + body, marker


def deliver(gw, data, marker, sender=SENDER):
    gw.send(sender, [RCPT], data)
    return gw.wait_for_marker(marker)


def split(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def subject(raw):
    return mxtest.header_values(raw, "Subject")[0]


def warning(raw):
    return mxtest.header_values(raw, "X-MXGate-Warning")


def test_plain_external_gets_tag_and_banner_once_forged_marker_dropped(gateway):
    gw = warn_gw(gateway)
    data, marker = message(["Content-Type: text/plain; charset=utf-8"], b"Hello\r\n",
                           extra=["X-MXGate-Warning: internal; banner=added"])
    raw = deliver(gw, data, marker)
    assert subject(raw).startswith("[EXT] hello"), subject(raw)
    assert split(raw)[1] == (TEXT + "\r\n\r\nHello\r\n").encode()
    w = warning(raw)
    assert len(w) == 1 and w[0].startswith("external; banner=added; by="), w
    gw.wait_log(r"warning why=external banner=\"added\"")
    # the warned message comes back (a forward, a reply quoting it whole):
    # no second tag, no second banner
    again = raw.split(b"\r\n", 1)[1]  # its Received: line aside, as is
    marker2 = marker + "x"
    again = again.replace(marker.encode(), marker2.encode())
    raw2 = deliver(gw, again, marker2)
    assert subject(raw2).count("[EXT]") == 1, subject(raw2)
    assert split(raw2)[1].count(TEXT.encode()) == 1
    assert warning(raw2)[0].startswith("external; banner=skipped reason=already_present")


def test_internal_sender_untouched(gateway):
    gw = warn_gw(gateway, internal_domains="partner.example")
    for sender in ("boss@example.test", "x@mail.partner.example"):
        data, marker = message(["Content-Type: text/plain"], b"Hi\r\n", sender=sender)
        raw = deliver(gw, data, marker, sender=sender)
        assert "[EXT]" not in subject(raw)
        assert not warning(raw)
        assert split(raw)[1] == b"Hi\r\n"


ALT = (b"This is MIME.\r\n--b1\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"caf=C3=A9 plain\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
       b"<html><body bgcolor=\"white\"><p>html</p></body></html>\r\n--b1--\r\n")


def test_multipart_alternative_and_attachment_byte_exact(gateway):
    gw = warn_gw(gateway)
    attach = base64.encodebytes(bytes(range(256)) * 8).replace(b"\n", b"\r\n")
    body = (b"--m1\r\nContent-Type: multipart/alternative; boundary=b1\r\n\r\n" + ALT +
            b"--m1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n" + attach + b"--m1--\r\n")
    data, marker = message(["Content-Type: multipart/mixed; boundary=m1"], body)
    raw = deliver(gw, data, marker)
    want = body.replace(b"caf=C3=A9 plain", (TEXT + "\r\n\r\ncaf=C3=A9 plain").encode()).replace(
        b"<body bgcolor=\"white\">",
        b"<body bgcolor=\"white\">\r\n<div data-mxgate-warning=\"1\">" + HTML.encode()
        + b"\r\n</div>")
    assert split(raw)[1] == want
    m = email.message_from_bytes(raw, policy=email.policy.default)
    parts = {p.get_content_type(): p for p in m.walk()}
    assert parts["text/plain"].get_content().replace("\r\n", "\n").startswith(TEXT + "\n\ncafé plain")
    assert parts["application/octet-stream"].get_content() == bytes(range(256)) * 8


SIGNED = [
    ("smime-signed", ["Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
                      "micalg=sha-256; boundary=s1"],
     b"--s1\r\nContent-Type: text/plain\r\n\r\nsigned text\r\n--s1\r\n"
     b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--s1--\r\n"),
    ("smime-enveloped", ["Content-Type: application/pkcs7-mime; smime-type=enveloped-data; "
                         "name=smime.p7m", "Content-Transfer-Encoding: base64"],
     b"MIAGCSqGSIb3DQEHA6CAMIACAQAxggE=\r\n"),
    ("pgp-mime", ["Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; "
                  "boundary=e1"],
     b"--e1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e1\r\n"
     b"Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n"
     b"hQEMA0\r\n-----END PGP MESSAGE-----\r\n--e1--\r\n"),
    ("inline-pgp", ["Content-Type: text/plain"],
     b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n"
     b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEz\r\n-----END PGP SIGNATURE-----\r\n"),
]


def test_signed_and_encrypted_bodies_left_alone_subject_tagged(gateway):
    gw = warn_gw(gateway)
    for name, hdrs, body in SIGNED:
        data, marker = message(hdrs, body)
        raw = deliver(gw, data, marker)
        assert subject(raw).startswith("[EXT] "), name
        assert split(raw)[1] == body, name
        assert warning(raw)[0].startswith(
            "external; banner=skipped reason=signed_or_encrypted"), (name, warning(raw))


def test_iso_8859_1_quoted_printable_and_base64(gateway):
    gw = warn_gw(gateway, banner_text="ATTENTION : exp\u00e9diteur externe.")
    banner = "ATTENTION : exp\u00e9diteur externe.\r\n\r\n"
    # quoted-printable: the banner in the part's charset, QP-encoded
    data, marker = message(["Content-Type: text/plain; charset=ISO-8859-1",
                            "Content-Transfer-Encoding: quoted-printable"], b"caf=E9\r\n")
    raw = deliver(gw, data, marker)
    assert split(raw)[1] == b"ATTENTION : exp=E9diteur externe.\r\n\r\ncaf=E9\r\n"
    # base64 8-bit Latin-1 body: decoded, banner in Latin-1, re-encoded
    data, marker = message(["Content-Type: text/plain; charset=iso-8859-1",
                            "Content-Transfer-Encoding: base64"],
                           base64.b64encode("d\u00e9j\u00e0 vu\r\n".encode("latin-1")) + b"\r\n")
    raw = deliver(gw, data, marker)
    body = base64.b64decode(split(raw)[1])
    assert body == (banner + "d\u00e9j\u00e0 vu\r\n").encode("latin-1")
    # 7bit part cannot carry a non-ASCII banner: subject only, said so
    data, marker = message(["Content-Type: text/plain; charset=us-ascii"], b"plain ascii\r\n")
    raw = deliver(gw, data, marker)
    assert split(raw)[1] == b"plain ascii\r\n"
    assert subject(raw).startswith("[EXT] ")
    assert warning(raw)[0].startswith("external; banner=skipped reason=charset")


def test_over_max_size_subject_only(gateway):
    gw = warn_gw(gateway, max_size="1K")
    body = b"x" * 70 + b"\r\n"
    data, marker = message(["Content-Type: text/plain"], body * 40)
    raw = deliver(gw, data, marker)
    assert split(raw)[1] == body * 40
    assert subject(raw).startswith("[EXT] ")
    assert warning(raw)[0].startswith("external; banner=skipped reason=size")


def test_disabled_by_default(gateway):
    gw = gateway()
    data, marker = message(["Content-Type: text/plain"], b"Hi\r\n",
                           extra=["X-MXGate-Warning: external; banner=added"])
    raw = deliver(gw, data, marker)
    assert subject(raw).startswith("hello ")
    assert split(raw)[1] == b"Hi\r\n"
    assert not warning(raw)  # a sender's copy never reaches the mailbox


def test_failing_senders_judged_by_dmarc_and_spf(gateway):
    """senders = failing: an internal-looking From: whose DMARC fails is
    warned, a passing external one is not; either: both kinds."""
    dns = mxtest.StubDns()
    dns.add("good.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    dns.add("_dmarc.good.test", "TXT", '"v=DMARC1; p=none"')
    dns.add("example.test", "TXT", '"v=spf1 -all"')
    dns.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=none"')
    dns.start()
    try:
        auth = {"spf": "yes", "dkim": "no", "dmarc": "yes"}
        d = {"forwarders": f"127.0.0.1@{dns.port}", "timeout": "1s"}
        w = {"enabled": "yes", "subject_tag": "[EXT]", "banner_text": TEXT, "banner_html": HTML}
        gw = gateway({"auth": auth, "dns": d, "warning": dict(w, senders="failing")}, dns=False)
        # our own domain, but DMARC fails (SPF -all, no DKIM): a spoof
        data, marker = message(["Content-Type: text/plain"], b"pay this\r\n",
                               sender="ceo@example.test")
        raw = deliver(gw, data, marker, sender="ceo@example.test")
        assert warning(raw)[0].startswith("failing; banner=added"), warning(raw)
        assert split(raw)[1].startswith(TEXT.encode())
        # external but authenticated: not warned under "failing"
        data, marker = message(["Content-Type: text/plain"], b"hi\r\n", sender="a@good.test")
        raw = deliver(gw, data, marker, sender="a@good.test")
        assert not warning(raw) and split(raw)[1] == b"hi\r\n"
        gw2 = gateway({"auth": auth, "dns": d, "warning": dict(w, senders="either")}, dns=False)
        data, marker = message(["Content-Type: text/plain"], b"hi\r\n", sender="a@good.test")
        raw = deliver(gw2, data, marker, sender="a@good.test")
        assert warning(raw)[0].startswith("external; banner=added"), warning(raw)
    finally:
        dns.stop()


def test_sender_cannot_shed_the_tag_or_banner(gateway):
    """Red team: the sender writes the tag at the end of its subject and
    mxgate's banner text into the text alternative nobody reads (plus the
    HTML mark in a comment and a <body> inside one).  The subject must
    still start with the tag and the HTML part the reader sees must still
    get the banner, right after the real <body>.  A reply prefix in front
    of a tag from an earlier pass does count as tagged."""
    gw = warn_gw(gateway)
    data, marker = message(["Content-Type: multipart/alternative; boundary=alt"],
                           ("--alt\r\nContent-Type: text/plain\r\n\r\nPay now.\r\n\r\n" + TEXT
                            + "\r\n--alt\r\nContent-Type: text/html\r\n\r\n<html><head><!-- "
                            "<body> data-mxgate-warning --></head><body><p>Pay now.</p>"
                            "</body></html>\r\n--alt--\r\n").encode())
    data = data.replace(f"Subject: hello {marker}".encode(),
                        f"Subject: hello {marker} {'pad ' * 20}[EXT]".encode())
    raw = deliver(gw, data, marker)
    assert subject(raw).startswith("[EXT] hello"), subject(raw)
    assert warning(raw)[0].startswith("external; banner=added;"), warning(raw)
    html = split(raw)[1].split(b"Content-Type: text/html\r\n\r\n", 1)[1]
    assert html.startswith(b"<html><head><!-- <body> data-mxgate-warning --></head><body>"
                           b"\r\n<div data-mxgate-warning=\"1\">"), html[:160]
    plain = split(raw)[1].split(b"Content-Type: text/plain\r\n\r\n", 1)[1]
    assert plain.startswith((TEXT + "\r\n\r\nPay now.").encode()), plain[:80]

    data, marker = message(["Content-Type: text/plain"], b"hi\r\n")
    data = data.replace(f"Subject: hello {marker}".encode(),
                        f"Subject: RE: [EXT] hello {marker}".encode())
    raw = deliver(gw, data, marker)
    assert subject(raw) == f"RE: [EXT] hello {marker}", subject(raw)


def test_no_subject_gets_one_with_the_tag(gateway):
    """Red team: leaving the Subject out must not shed the tag - the
    message gets a Subject made of it."""
    gw = warn_gw(gateway)
    data, marker = message(["Content-Type: text/plain"], b"hi\r\n")
    data = data.replace(f"Subject: hello {marker}\r\n".encode(), b"")
    raw = deliver(gw, data, marker)
    assert mxtest.header_values(raw, "Subject") == ["[EXT]"], raw[:600]


def test_default_warns_a_spoof_of_our_own_domain(gateway):
    """Red team: with the old default (senders = external) a message forging
    a From: in our own domain - DMARC fails, but the domain's policy is
    p=none, so it is delivered - looked internal and got no warning: the
    CEO-fraud case the warning is for.  The default is now `either`; an
    authentic internal-domain message still gets none."""
    dns = mxtest.StubDns()
    dns.add("example.test", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    dns.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=none"')
    dns.start()
    try:
        gw = gateway({"auth": {"spf": "yes", "dkim": "no", "dmarc": "yes"},
                      "dns": {"forwarders": f"127.0.0.1@{dns.port}", "timeout": "1s"},
                      "warning": {"enabled": "yes", "subject_tag": "[EXT]",
                                  "banner_text": TEXT, "banner_html": HTML}}, dns=False)
        data, marker = message(["Content-Type: text/plain"], b"pay this\r\n",
                               sender="ceo@example.test")
        raw = deliver(gw, data, marker, sender="ceo@example.test")
        assert warning(raw) and warning(raw)[0].startswith("failing; banner=added"), raw[:900]
        # SPF fail + DMARC fail score 7 >= 5: [spam] quarantine_action = tag
        # puts the spam tag on too (issue 13: tag means the subject tag for
        # every verdict), in front of the warning's
        assert subject(raw).startswith("[SPAM] [EXT] ")
        # the same domain, authentic (SPF pass from 127.0.0.2, aligned): untouched
        data, marker = message(["Content-Type: text/plain"], b"hi\r\n", sender="boss@example.test")
        with gw.client(source="127.0.0.2") as c:
            c.ehlo()
            mxtest.assert_reply(c.transaction("boss@example.test", [RCPT], data,
                                              expect_queued=False), 250)
        raw = gw.wait_for_marker(marker)
        assert not warning(raw), raw[:900]
        assert "[EXT]" not in subject(raw)
    finally:
        dns.stop()
