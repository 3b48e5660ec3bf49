"""Red team (issue 11): a hostile downstream tries to make mxgate count a
message as delivered that it never received.

A downstream that answers the final dot before it was sent - "354" and
"250" in one write, then the connection dropped - must not get the message
marked delivered: no reply can answer a dot that was not on the wire yet
(RFC 5321 4.1.1.4, RFC 2920 3.1: after 354 the server waits for the data).
The message stays queued, is deferred, and is delivered whole once the
downstream behaves."""

import pytest

import test_faults_downstream as tfd
from downstream import Downstream
from mxtest import make_message, scaled, wait_for

SENDER = tfd.SENDER


class EarlyReplyDownstream(tfd.RawDownstream):
    """RawDownstream plus mode "early-250": the reply to the final dot is
    sent together with 354, before a byte of the message arrived; then the
    connection is closed without reading the message."""

    def _session(self, conn, mode):
        if mode != "early-250":
            return super()._session(conn, mode)
        conn.sendall(b"220 downstream.test ESMTP\r\n")
        buf = [b""]
        while True:
            line = self._readline(conn, buf)
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-downstream.test\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                conn.sendall(b"250 ok\r\n")
            elif verb == b"DATA":
                with self.lock:
                    self.data_refused += 1
                conn.sendall(b"354 go\r\n250 2.0.0 queued before you sent it\r\n")
                return
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"500 what\r\n")


@pytest.mark.parametrize("size", ["small", "large"])
def test_reply_to_dot_before_the_dot_is_no_delivery(gateway, size):
    with EarlyReplyDownstream() as ds, Downstream() as bounce:
        ds.mode = "early-250"
        gw = tfd._split_gateway(gateway, [f"127.0.0.1:{ds.port}"], bounce)
        body = "short body\r\n" if size == "small" else \
            "".join(f"line {i:06d} " + "z" * 70 + "\r\n" for i in range(8000))
        msg, marker = make_message(sender=SENDER, body=body)
        qid = gw.send(SENDER, ["a@example.test"], msg)
        wait_for(lambda: ds.data_refused >= 2, scaled(15), what="a retry after the early reply")
        gw.wait_log(qid + r" status=deferred attempts=1 ", scaled(5))
        log = gw.log_text()
        assert "status=sent" not in log, "a message the downstream never received counted as sent"
        assert qid in gw.queue_ids()
        ds.mode = "good"
        wait_for(lambda: ds.find(marker), scaled(20), what="delivery once the downstream behaves")
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue drained")
        [(_, rcpts, data)] = ds.find(marker)
        assert rcpts == ["<a@example.test>"] and data.endswith(msg)
        assert not bounce.messages
