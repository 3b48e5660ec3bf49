"""corpus - realistic DKIM-signed messages for mxgate's benchmark.

make_corpus(dir, dns) makes one 2048-bit RSA key per sender domain (at bench
time, with openssl), publishes SPF, DKIM and DMARC (p=reject) records for
each domain in `dns` (a dnsserver.UnboundServer not yet started), and writes
messages of three size classes - 4 KiB (plain text + HTML), 40 KiB and 1 MiB
(multipart/mixed with a base64 attachment) - signed relaxed/relaxed with
python3-dkim.  Returns the path of a manifest for bench/mxload: one line per
message, "class sender recipient path".

The mix replayed is 14 x 4 KiB, 5 x 40 KiB, 1 x 1 MiB (round robin), i.e.
mostly small mail with the occasional large attachment.
"""

import base64
import email.utils
import os
import random
from pathlib import Path

import dnsserver

DOMAINS = ["alpha.example", "bravo.example", "charlie.example", "delta.example"]
SELECTOR = "bench2048"
HELO = "load.bench.example"
PLAIN_DOMAIN = "plain.example"  # SPF only, no DKIM/DMARC: for smtp-source
RCPT = "user{n}@example.test"
MIX = ["4k"] * 14 + ["40k"] * 5 + ["1m"]
SIZES = {"4k": 4096, "40k": 40 * 1024, "1m": 1024 * 1024}

WORDS = ("invoice shipment meeting agenda quarterly report attached please review "
         "thanks regards schedule project update delivery customer account order "
         "payment reminder confirm tomorrow office team budget draft final").split()


def _text(rng, nbytes):
    out, n = [], 0
    line = []
    while n < nbytes:
        w = rng.choice(WORDS)
        line.append(w)
        n += len(w) + 1
        if len(" ".join(line)) > 70:
            out.append(" ".join(line))
            line = []
    if line:
        out.append(" ".join(line))
    return "\r\n".join(out) + "\r\n"


def _message(rng, i, cls, domain):
    target = SIZES[cls]
    sender = f"user{i}@{domain}"
    mid = f"<bench.{i}.{rng.getrandbits(64):016x}@{domain}>"
    hdr = [
        f"From: \"Sender {i}\" <{sender}>",
        f"To: <{RCPT.format(n=i % 7)}>",
        f"Subject: bench message {i} ({cls})",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
    ]
    boundary = f"=_bench_{i}_{rng.getrandbits(32):08x}"
    if cls == "4k":
        hdr.append(f"Content-Type: multipart/alternative; boundary=\"{boundary}\"")
        fixed = 900
        txt = _text(rng, max(200, (target - fixed) // 2))
        html = "<html><body><p>" + _text(rng, max(200, (target - fixed) // 2 - 40)).replace(
            "\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n\r\n{txt}"
                f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n\r\n{html}--{boundary}--\r\n")
    else:
        hdr.append(f"Content-Type: multipart/mixed; boundary=\"{boundary}\"")
        txt = _text(rng, 1200)
        att_raw = int((target - 2500) * 3 / 4)
        blob = base64.b64encode(rng.randbytes(att_raw)).decode()
        att = "\r\n".join(blob[k:k + 76] for k in range(0, len(blob), 76)) + "\r\n"
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n\r\n{txt}"
                f"--{boundary}\r\nContent-Type: application/pdf; name=\"report-{i}.pdf\"\r\n"
                f"Content-Disposition: attachment; filename=\"report-{i}.pdf\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{att}--{boundary}--\r\n")
    msg = ("\r\n".join(hdr) + "\r\n\r\n" + body).encode()
    return sender, msg


def make_corpus(outdir, dns):
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261125)
    keys = {}
    for d in DOMAINS:
        priv, txt = dnsserver.make_dkim_key(outdir, 2048, name=f"key-{d}")
        keys[d] = priv
        dns.add(d, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
        dns.add_txt(f"{SELECTOR}._domainkey.{d}", txt)
        dns.add(f"_dmarc.{d}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{d}")
    dns.add(HELO, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add(PLAIN_DOMAIN, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    lines = []
    for i, cls in enumerate(MIX):
        d = DOMAINS[i % len(DOMAINS)]
        sender, msg = _message(rng, i, cls, d)
        sig = dnsserver.dkim_sign(msg, SELECTOR, d, keys[d],
                                  headers=[b"from", b"to", b"subject", b"date",
                                           b"message-id", b"mime-version",
                                           b"content-type"])
        p = outdir / f"{i:02d}-{cls}.eml"
        p.write_bytes(sig + msg)
        lines.append(f"{cls} {sender} {RCPT.format(n=i % 7)} {p}")
    manifest = outdir / "manifest"
    manifest.write_text("\n".join(lines) + "\n")
    os.chmod(outdir, 0o755)
    return manifest
