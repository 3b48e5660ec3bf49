"""SMTP smuggling (end-of-data confusion, CVE-2023-51764/51765/51766 family):
only <CR><LF>.<CR><LF> ends DATA.  Every look-alike end of data is kept inside
the message, the message is refused with 5xx at the real end, and the
commands hidden behind the fake end never run: no second message appears."""

import pytest

from mxtest import assert_reply, make_message, queued_id, scaled, wait_for

SENDER = "sender@client.example.net"
RCPT = "user@example.test"

# name -> bytes that follow "line1" and pretend to end the data
FAKE_ENDS = {
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "crlf-dot-cr-lf-lf": b"\r\n.\r\r\n",
    "crlf-nul-dot-crlf": b"\r\n\x00.\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\x00\r\n",
    "lf-dot-nul-lf": b"\n.\x00\n",
    "bare-lf-line": b"\nplain line\n",
    "bare-cr-line": b"\rplain line\r",
    "nul-in-line": b"\x00\r\n",
}


@pytest.fixture(scope="module")
def shared_gw(module_gateway):
    """One daemon for all the variants (each start/stop costs ~1 s under ASan)."""
    return module_gateway()


@pytest.mark.parametrize("name", list(FAKE_ENDS))
def test_fake_end_of_data_refused_and_not_split(shared_gw, name):
    gw = shared_gw
    carrier, carrier_marker = make_message(body="")
    carrier = carrier + b"line1" + FAKE_ENDS[name]
    smuggled, smuggled_marker = make_message(subject="SMUGGLED", sender="ceo@example.test")
    payload = (carrier
               + b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
               + smuggled)
    assert payload.endswith(b"\r\n")
    good, good_marker = make_message()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(payload)
        early = c.pending()
        assert early == b"", f"{name}: the server answered before the real end of data: {early!r}"
        c.send(b".\r\n")
        r = c.reply()
        assert str(r.code)[0] == "5", f"{name}: message with a fake end of data accepted: {r}"
        extra = c.pending()
        assert extra == b"", f"{name}: replies to smuggled commands: {extra!r}"
        # the session is in a clean state: a real message goes through
        qid = queued_id(c.transaction(SENDER, [RCPT], good))
        assert_reply(c.cmd("QUIT"), 221)
    assert qid.encode() in gw.wait_for_marker(good_marker)
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue empty")
    # the smuggled message would have been queued before the good one
    assert not gw.find_in_mailbox(smuggled_marker), f"{name}: smuggled message delivered"
    assert not gw.find_in_mailbox(carrier_marker), f"{name}: carrier message delivered"
    assert not gw.incoming_files()


def test_fake_ends_in_one_pipelined_write(gateway):
    """The same, with the whole transaction, the fake end, the smuggled
    commands, the real end and QUIT in a single write."""
    gw = gateway()
    carrier, cm = make_message(body="line1")
    smuggled, sm = make_message(subject="SMUGGLED")
    data = (f"EHLO client.example.net\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n"
            .encode() + carrier.rstrip(b"\r\n") + b"\n.\n"
            + b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
            + smuggled + b".\r\nQUIT\r\n")
    with gw.client() as c:
        c.send(data)
        assert_reply(c.reply(), 250)        # EHLO
        assert_reply(c.reply(), 250)        # MAIL
        assert_reply(c.reply(), 250)        # RCPT
        assert_reply(c.reply(), 354)        # DATA
        r = c.reply()
        assert str(r.code)[0] == "5", f"expected 5xx at the real end of data, got {r}"
        assert_reply(c.reply(), 221)
        rest = c.wait_closed(scaled(5))
        assert rest == b"", f"extra replies: {rest!r}"
    assert not gw.queue_ids()
    assert not gw.find_in_mailbox(sm)
    assert not gw.mailbox_files()


def test_end_of_data_split_across_packets(gateway):
    """<CR><LF>.<CR><LF> split at every position still ends the data."""
    gw = gateway()
    markers = []
    with gw.client() as c:
        c.ehlo()
        for cut in range(1, 5):
            msg, marker = make_message()
            markers.append(marker)
            assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
            assert_reply(c.cmd("DATA"), 354)
            data = msg + b".\r\n"
            end = len(data) - 5 + cut
            c.send(data[:end])
            assert c.pending(0.1) == b""
            c.send(data[end:])
            queued_id(c.reply())
    for m in markers:
        gw.wait_for_marker(m)


def test_dot_line_inside_message_is_unstuffed_not_ended(gateway):
    gw = gateway()
    msg, marker = make_message(body="a\r\n.\r\nb\r\n")    # dot_stuff makes the middle ".."
    qid = gw.send(SENDER, [RCPT], msg)
    eml = gw.wait_for_marker(marker)
    assert eml.endswith(msg), "dot-stuffed line not restored"
    assert qid
