"""A real HTTP server on a free local port, in a thread, for the tests that need one to call."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], *, host: str = "127.0.0.1"
) -> Iterator[ThreadingHTTPServer]:
    """Serve `handler` on `host` and a free port until the block ends; the server's address is
    `server.server_address`. Handler threads are daemons, so a request left hanging ends nothing."""
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    """http://host:port of a server `serving` started."""
    host, port = server.server_address[:2]
    return f"http://{host if isinstance(host, str) else host.decode()}:{port}"
