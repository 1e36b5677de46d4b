"""Fixtures shared by every test folder: real servers on 127.0.0.1 (see :mod:`tests.servers`)."""

from tests.servers import http_server, s3_server

__all__ = ["http_server", "s3_server"]
