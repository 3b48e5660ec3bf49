"""The README walkthrough: `mxgate run` with no -c (the embedded default:
127.0.0.1:2525, mail for example.test into ./mxgate-data/mailbox), a message
sent with swaks, the .eml in ./mxgate-data/mailbox, a relay attempt refused.
Runs in a private working directory; skipped when port 2525 is taken."""

import signal
import subprocess
import time
import uuid

import pytest

from mxtest import _SANITIZER_RE, header_values, mxgate_bin, parse_received, pid_listens_on, port_is_free, \
    scaled, wait_for

PORT = 2525


def test_readme_walkthrough(workdir):
    if not port_is_free(PORT):
        pytest.skip(f"127.0.0.1:{PORT} is in use by another process; the walkthrough needs it")
    log = open(workdir / "mxgate.log", "wb")
    proc = subprocess.Popen([mxgate_bin(), "run"], cwd=str(workdir), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def logtail():
        return (workdir / "mxgate.log").read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + scaled(20)
        while not pid_listens_on(proc.pid, PORT):
            if proc.poll() is not None:
                if "in use" in logtail().lower():
                    pytest.skip(f"127.0.0.1:{PORT} was taken while mxgate started")
                pytest.fail(f"mxgate run exited {proc.returncode}:\n{logtail()}")
            assert time.monotonic() < deadline, f"not listening on {PORT}:\n{logtail()}"
            time.sleep(0.05)

        # the embedded default inspects no content, and says how to turn it on
        wait_for(lambda: "- content inspection off: set [clamav] socket = /run/clamav/clamd.ctl "
                 "and/or [rspamd] address = 127.0.0.1:11333 (docs/postmaster-guide.md)"
                 in (workdir / "mxgate.log").read_text(errors="replace"), scaled(10),
                 what="the content inspection hint")

        marker = "walkthrough-" + uuid.uuid4().hex
        p = subprocess.run(["swaks", "--server", f"127.0.0.1:{PORT}", "--from", "alice@sender.test",
                            "--to", "bob@example.test", "--header", f"Subject: hello {marker}",
                            "--body", "first message through mxgate", "--timeout", "30"],
                           capture_output=True, text=True, timeout=scaled(60))
        assert p.returncode == 0, f"swaks failed:\n{p.stdout}\n{p.stderr}\n{logtail()}"
        assert "250 2.0.0 Ok: queued as" in p.stdout, p.stdout

        mailbox = workdir / "mxgate-data" / "mailbox"

        def delivered():
            for f in (mailbox.glob("*.eml") if mailbox.is_dir() else []):
                data = f.read_bytes()
                if marker.encode() in data:
                    return data
            return None
        eml = wait_for(delivered, scaled(20), what=f"the .eml in {mailbox}")
        rcv = parse_received(header_values(eml, "Received")[0])
        assert rcv is not None and rcv["for_"] == "<bob@example.test>", eml[:1000]

        p = subprocess.run(["swaks", "--server", f"127.0.0.1:{PORT}", "--from", "alice@sender.test",
                            "--to", "someone@elsewhere.test", "--timeout", "30"],
                           capture_output=True, text=True, timeout=scaled(60))
        assert p.returncode != 0 and "550 5.7.1" in p.stdout, p.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(scaled(15))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                pytest.fail(f"mxgate did not stop on SIGTERM:\n{logtail()}")
        log.close()
    assert proc.returncode == 0, f"exit status {proc.returncode} after SIGTERM:\n{logtail()}"
    assert not _SANITIZER_RE.search(logtail()), f"sanitizer report:\n{logtail()}"
