"""Red team (issue 11): a hostile MTA-STS policy server.

The bounce's destination (anyone who can get a DSN sent to a domain of
theirs) runs the web server mxgate fetches the policy from.  It answers at
once, then trickles the policy one byte a second: every read is within the
inactivity timeout, so without a deadline for the whole fetch the bounce
(and every other message to that domain) waits as long as the server
likes.  The fetch must end after the route's connect_timeout (3 s here),
like a server that never answers (test_delivery_mtasts.py), and the DSN go
out as tls = may."""

import http.server
import ssl
import threading
import time

import test_delivery_mtasts as tdm
from downstream import Downstream, dsns, outbound_route, relay_extra
from mxtest import scaled, wait_for

ca = tdm.ca
other_ca = tdm.other_ca
inbound = tdm.inbound


class TricklePolicyServer:
    """HTTPS on tdm.ADDR: 200, text/plain, then the body a byte a second."""

    def __init__(self, ca, policy):
        self.requests = []
        self.stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = policy.encode() + b"\n" * 200
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(body)):
                    if outer.stop.wait(1):
                        return
                    try:
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((tdm.ADDR, 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ca.chain, ca.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_trickling_policy_server_is_cut_off_at_the_deadline(gateway, inbound, ca, other_ca):
    web = TricklePolicyServer(ca, tdm.policy("enforce"))
    mx = Downstream(host=tdm.ADDR, tls=other_ca).start()
    try:
        route = outbound_route(mx.port, tls="dane")
        route.update({"mta_sts_port": str(web.port), "mta_sts_ca_file": ca.ca_cert})
        gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]), "route outbound": route})
        gw.dns.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=20261202a"')
        gw.dns.add("mta-sts.sts.test", "A", tdm.ADDR)
        gw.dns.add("sts.test", "MX", "10 mx.sts.test.")
        gw.dns.add("mx.sts.test", "A", tdm.ADDR)
        dsn_id = tdm.bounce_one(gw)
        wait_for(lambda: web.requests, scaled(15), what="the policy request")
        t0 = time.monotonic()
        gw.wait_log(r"mta-sts domain=sts.test status=fetch-failed", scaled(15))
        wait_for(lambda: dsns(mx), scaled(15), what="the DSN after the fetch was cut off")
        gw.wait_log(dsn_id + r" to=<alice@sts.test> .* status=sent")
        assert time.monotonic() - t0 < 200, "waited for the whole trickle"
    finally:
        web.close()
        mx.stop()
