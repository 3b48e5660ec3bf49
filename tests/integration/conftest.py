"""Shared pytest fixtures for mxgate's integration tests (see mxtest.py).

Fixtures
    workdir         a private, short temp folder (removed after a passing test,
                    kept and printed after a failing one)
    test_ca         a throw-away CA + server certificate (make_test_ca) in workdir
    gateway         a factory: gateway(extra=None, start=True, **Gateway kwargs)
                    -> a started Gateway in its own sub-folder of workdir.  At
                    teardown every gateway is stopped with SIGTERM; a non-zero
                    exit status or a sanitizer report is a teardown error, and on
                    a failing test the log tail of each gateway is printed.
    module_gateway  the same factory with module scope: one daemon shared by
                    the tests of a file (cheaper under ASan); use markers, not
                    mailbox counts, to find your messages.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mxtest  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


class _Pool:
    """Gateways made by one fixture instance, stopped together."""

    def __init__(self, root):
        self.root = Path(root)
        self.made = []

    def make(self, extra=None, start=True, **kw):
        gw = mxtest.Gateway(self.root / f"gw{len(self.made)}", extra, **kw)
        self.made.append(gw)
        if start:
            gw.start()
        return gw

    def teardown(self, failed):
        problems = []
        for gw in self.made:
            if failed:
                print(f"\n----- mxgate log ({gw.log_path}), last lines -----\n{gw.log_tail(80)}")
            try:
                if gw.proc is not None:
                    rc = gw.stop()
                    if rc not in (0, None) and not failed:
                        problems.append(f"mxgate exited with status {rc} after SIGTERM;"
                                        f" log tail:\n{gw.log_tail(40)}")
                else:
                    gw._check_sanitizers()
            except AssertionError as e:
                problems.append(str(e))
            finally:
                gw.close()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def workdir(request):
    d = Path(tempfile.mkdtemp(prefix="mxg-", dir="/tmp"))
    yield d
    if _failed(request):
        print(f"\n[workdir kept: {d}]")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def test_ca(workdir):
    return mxtest.make_test_ca(workdir)


@pytest.fixture
def gateway(request, workdir):
    pool = _Pool(workdir)
    yield pool.make
    pool.teardown(_failed(request))


@pytest.fixture(scope="module")
def module_gateway(request):
    d = Path(tempfile.mkdtemp(prefix="mxg-", dir="/tmp"))
    failed_before = request.session.testsfailed
    pool = _Pool(d)
    yield pool.make
    failed = request.session.testsfailed > failed_before
    try:
        pool.teardown(failed)
    finally:
        if failed:
            print(f"\n[module workdir kept: {d}]")
        else:
            shutil.rmtree(d, ignore_errors=True)
