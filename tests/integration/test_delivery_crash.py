"""kill -9 in the middle of deliveries, then restart: at-least-once.  A
recipient whose 250 was recorded is never sent again; a recipient whose
delivery was interrupted is delivered after the restart; nothing is lost.
"""

from downstream import Downstream, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "sender@example.test"


def test_kill9_mid_data_after_partial_delivery(gateway):
    with Downstream() as ds:
        ds.rcpt_replies["b@example.test"] = ["451 4.3.0 later"]
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], route={"data_timeout": "30s"},
                                 queue={"retry_schedule": "1s"}))
        data, marker = make_message(sender=SENDER)
        qid = gw.send(SENDER, ["a@example.test", "b@example.test"], data)
        gw.wait_log(qid + r" status=deferred attempts=1")
        ds.hang_in_data = True   # the retry for b hangs after its final dot
        wait_for(lambda: ds.events.count("data") >= 2, scaled(10), what="the retry in DATA")
        gw.kill9()
        ds.hang_in_data = False
        gw.start()
        wait_for(lambda: len(ds.find(marker)) >= 2, scaled(15), what="b after the restart")
        wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
        got = sorted(a for r in ds.find(marker) for a in r.rcpt_tos)
        assert got == ["a@example.test", "b@example.test"]   # a never twice, b once


def test_kill9_under_load_loses_nothing(gateway):
    with Downstream() as ds:
        ds.data_delay = 0.05
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"], queue={"retry_schedule": "1s"}))
        markers = []
        for i in range(15):
            data, marker = make_message(sender=SENDER)
            gw.send(SENDER, [f"x{i}@example.test", f"y{i}@example.test"], data)
            markers.append((marker, {f"x{i}@example.test", f"y{i}@example.test"}))
        gw.kill9()   # some delivered, some in flight, some not started
        gw.start()

        def all_there():
            return all(set(a for r in ds.find(m) for a in r.rcpt_tos) == want
                       for m, want in markers)
        wait_for(all_there, scaled(20), what="every recipient delivered at least once")
        # msg/ID goes after its envelope (and after a folder fsync): wait
        # for both, rather than racing the I/O thread
        wait_for(lambda: not gw.queue_ids() and not gw.msg_files(), scaled(5),
                 what="empty queue, no message files left")
