"""Fixtures shared by every test folder: real servers on 127.0.0.1 (see :mod:`tests.servers`).

The suite never reads or writes the user's ``~/.cache/gigaseg``: the autotune cache of a
session lives in a fresh folder (set here, at import, so subprocesses and Dask workers started
by the tests inherit it). A cached choice from another checkout or an older version of the
code can then never decide how a test's model is called.
"""

import atexit
import os
import shutil
import tempfile

from tests.servers import http_server, plain_http_server, s3_server

if "GIGASEG_TEST_KEEP_CACHE" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="gigaseg-test-cache-")
    os.environ["GIGASEG_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

__all__ = ["http_server", "plain_http_server", "s3_server"]
