"""The production web server, `python -m cs_platform.serve_web`: daphne serving the ASGI application.

The Dockerfile's CMD, docker compose's web service and tests/test_front_proxy.py all start it, so the
command line that is tested is the one that runs. `DAPHNE_BIND` (default 0.0.0.0) and `DAPHNE_PORT`
(default 8000) say where it listens: the process's own socket, not a Django setting, hence not in
settings.py.

daphne's `--proxy-headers` is left out on purpose: it puts the leftmost X-Forwarded-For address, which
any client can write, into the ASGI scope as the client. The scope keeps the TCP peer (the front
proxy), and cs_platform/client_ip.py walks X-Forwarded-For back only through TRUSTED_PROXIES.

daphne's requests are Twisted's, and Twisted parses a multipart or URL-encoded POST body into
`request.args` before daphne hands the body to the application, which nobody reads (Django parses
the body itself): a 10 MB upload cost 120–150 MB at its peak, a 100 MB one 1.2 GB. That parsing is
turned off here (Twisted's `parsePOSTFormSubmission`), which brings them down to about 15 and 110 MB.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping
from typing import Any

APPLICATION = "cs_platform.asgi:application"


def daphne_arguments(environ: Mapping[str, str]) -> list[str]:
    """daphne's command-line arguments for this environment; ValueError with a sentence if it is invalid."""
    # All interfaces by default: in its container, web is reached over the compose network.
    bind = environ.get("DAPHNE_BIND", "").strip() or "0.0.0.0"  # noqa: S104
    port = environ.get("DAPHNE_PORT", "").strip() or "8000"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"DAPHNE_PORT must be a TCP port number (1–65535), not {port!r}.")
    return ["--bind", bind, "--port", port, APPLICATION]


def skip_twisted_form_parsing() -> None:
    """Make daphne's requests leave form bodies to Django instead of parsing them into memory first."""
    from daphne import http_protocol
    from twisted.web import http

    if "parsePOSTFormSubmission" not in inspect.signature(http.Request.__init__).parameters:
        raise RuntimeError("Twisted is too old to leave form bodies unparsed (parsePOSTFormSubmission).")
    if getattr(http_protocol.WebRequest, "parses_forms", True) is False:
        return

    class UnparsedFormWebRequest(http_protocol.WebRequest):
        parses_forms = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    # daphne's HTTPFactory looks the request class up by this module-level name for every connection.
    http_protocol.WebRequest = UnparsedFormWebRequest


def main() -> None:
    """Run daphne in this process (so its pid is the server's) until it is stopped."""
    try:
        arguments = daphne_arguments(os.environ)
    except ValueError as error:
        sys.exit(str(error))
    # Imported here: daphne installs Twisted's asyncio reactor when it is imported.
    from daphne.cli import CommandLineInterface

    skip_twisted_form_parsing()
    CommandLineInterface().run(arguments)


if __name__ == "__main__":
    main()
