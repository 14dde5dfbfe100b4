"""The gateway's image_url parts: data: URLs decoded and normalised, http(s) URLs fetched safely."""

from __future__ import annotations

import base64
import io
import ipaddress
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import pytest
from PIL import Image

from conversations import uploads
from cs_platform.processes import free_port
from gateway import images
from gateway.images import GatewayImageError, image_url_to_data_url

BLUE_HALF_TRANSPARENT = (0, 0, 255, 128)
NOT_ALLOWED_KEY = (
    "This API key may send images only as data: URLs (data:image/png;base64,...); send the image inline, "
    "or ask the platform's administrators to let the key fetch image URLs."
)
NOT_A_URL_WE_TAKE = "An image_url must be a data: URL (data:image/png;base64,...) or an http or https URL."
NOT_BASE64 = (
    "The image data: URL's data is not valid base64; encode the file's bytes with standard "
    "base64 (A-Z, a-z, 0-9, + and /, padded with =)."
)
NOT_AN_IMAGE = "the file is not a supported image; send a JPEG, PNG, WebP or GIF picture."


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), BLUE_HALF_TRANSPARENT).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_of(url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :], validate=True)))
    image.load()
    return image


def internal(url: str, host: str) -> str:
    return (
        f"The image URL {url} resolves to an internal address (host {host}); the gateway "
        "fetches images only from public addresses, so send this one as a data: URL."
    )


# A real HTTP server in a thread, whose paths answer as each test needs.


@dataclass
class Seen:
    """A request the image server received."""

    path: str
    headers: dict[str, str]


@dataclass
class Transfer:
    """How much of a large body the image server wrote before the client went away."""

    sent: int = 0
    cut_off: bool = False


Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class ImageServer:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    finished: queue.Queue[str] = field(default_factory=queue.Queue)
    release: threading.Event = field(default_factory=threading.Event)
    tls: ssl.SSLContext | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ImageServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                server.seen.append(Seen(path=path, headers={k.lower(): v for k, v in self.headers.items()}))
                try:
                    server.routes.get(path, not_found)(self)
                finally:
                    server.finished.put(path)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((self.host, self.port), Handler)
        self._http.daemon_threads = True
        if self.tls is not None:
            self._http.socket = self.tls.wrap_socket(self._http.socket, server_side=True)
        self._thread = threading.Thread(
            target=lambda: self._http.serve_forever(poll_interval=0.05), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def wait_finished(self, path: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.finished.get(timeout=left) == path:
                    return
            except queue.Empty:
                break
        raise AssertionError(f"the server never finished {path}")

    def paths(self) -> list[str]:
        return [request.path for request in self.seen]


def not_found(handler: BaseHTTPRequestHandler) -> None:
    answer(handler, 404, b"no such image", content_type="text/plain")


def answer(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    *,
    content_type: str | None = "image/png",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def serves(body: bytes, **options: Any) -> Route:
    return lambda handler: answer(handler, 200, body, **options)


def redirects(location: str, *, status: int = 302, headers: dict[str, str] | None = None) -> Route:
    return lambda handler: answer(
        handler, status, b"", content_type="text/plain", headers={"Location": location, **(headers or {})}
    )


def endless(server: ImageServer, path: str, *, declared_length: int | None) -> Route:
    """A body of 64 MB, written until the client goes away (Content-Length optional)."""
    total = 64 * 1024 * 1024
    chunk = b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024 - 8)

    def route(handler: BaseHTTPRequestHandler) -> None:
        transfer = server.transfers[path] = Transfer()
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        if declared_length is not None:
            handler.send_header("Content-Length", str(declared_length))
        handler.end_headers()
        try:
            while transfer.sent < total:
                handler.wfile.write(chunk)
                transfer.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            transfer.cut_off = True

    return route


def hangs(server: ImageServer) -> Route:
    """Headers at once, then nothing until the test ends."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.flush()
        server.release.wait(timeout=10)

    return route


def trickles(server: ImageServer) -> Route:
    """A byte every 50 ms: each read arrives well within any per-read timeout."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        try:
            for _ in range(1000):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                if server.release.wait(timeout=0.05):
                    return
        except (BrokenPipeError, ConnectionResetError):
            pass

    return route


@pytest.fixture
def image_server(settings: Any) -> Iterator[ImageServer]:
    """The image server on 127.0.0.1, which image URLs may reach (127.0.0.1/32 allowed)."""
    settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = ImageServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def other_loopback_server() -> Iterator[ImageServer]:
    """A second server on 127.0.0.2, outside the allowed networks: image URLs must never reach it."""
    server = ImageServer(host="127.0.0.2").start()
    server.routes["/image.png"] = serves(png_bytes())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (address, port) the fetch's network backend connected to."""
    made: list[tuple[str, int]] = []
    real_connect_tcp = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self: httpcore.AnyIOBackend, host: str, port: int, **kwargs: Any) -> Any:
        made.append((host, port))
        return await real_connect_tcp(self, host, port, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return made


@pytest.fixture
def resolves(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], list[str]]:
    """Make host names resolve to the given addresses (others as usual); returns the names looked up."""
    looked_up: list[str] = []

    def install(names: dict[str, list[str]]) -> list[str]:
        real_host_resolve = images.host_resolve

        async def host_resolve(host: str, port: int) -> list[Any]:
            looked_up.append(host)
            if host in names:
                return [ipaddress.ip_address(address) for address in names[host]]
            return await real_host_resolve(host, port)

        monkeypatch.setattr(images, "host_resolve", host_resolve)
        return looked_up

    return install


@pytest.fixture
def normalisations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the bytes handed to the upload normaliser."""
    calls: list[int] = []
    real_image_normalise = images.image_normalise

    def image_normalise(source: bytes) -> Any:
        calls.append(len(source))
        return real_image_normalise(source)

    monkeypatch.setattr(images, "image_normalise", image_normalise)
    return calls


# data: URLs


async def test_it_turns_a_png_data_url_into_the_jpeg_data_url_of_the_normalised_image() -> None:
    result = await image_url_to_data_url(data_url(png_bytes(64, 48)), fetches_image_urls=False)

    image = jpeg_of(result)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (64, 48)
    # Half-transparent blue is flattened onto white.
    assert image.getpixel((32, 24)) == pytest.approx((127, 127, 255), abs=3)


async def test_it_scales_a_large_data_url_image_down_like_an_upload(settings: Any) -> None:
    settings.ATTACHMENT_MAX_SIDE = 2048
    settings.ATTACHMENT_MAX_PIXELS = 2048 * 28 * 28

    result = await image_url_to_data_url(data_url(png_bytes(3000, 1500)), fetches_image_urls=False)

    assert jpeg_of(result).size == (1792, 896)


async def test_it_takes_a_data_url_whose_declared_image_type_differs_from_the_file() -> None:
    result = await image_url_to_data_url(data_url(png_bytes(), "IMAGE/JPEG"), fetches_image_urls=False)

    assert jpeg_of(result).size == (64, 48)


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@@@",
        "data:image/png;base64,iVBORw0KGgo=iVBORw0KGgo=",
        "data:image/png;base64,iVBORw0KGgo",
        "data:image/png;base64,iVBO Rw0K",
        "data:image/png;base64,iVBORw0KGgé=",
    ],
)
async def test_it_refuses_a_data_url_that_is_not_strict_base64(url: str, normalisations: list[int]) -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert (caught.value.code, caught.value.message) == ("invalid_image_url", NOT_BASE64)
    assert normalisations == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "data:image/png,%89PNG",
            "An image data: URL must be base64-encoded, as in data:image/png;base64,....",
        ),
        (
            "data:image/png;base64",
            "An image data: URL must be base64-encoded, as in data:image/png;base64,....",
        ),
        (
            "data:text/plain;base64,aGVsbG8=",
            "An image data: URL must name an image type, as in data:image/png;base64,..., not text/plain.",
        ),
        (
            "data:;base64,aGVsbG8=",
            "An image data: URL must name an image type, as in data:image/png;base64,..., not no type.",
        ),
    ],
)
async def test_it_refuses_a_data_url_that_is_not_a_base64_image(
    url: str, message: str, normalisations: list[int]
) -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=False)

    assert (caught.value.code, caught.value.message) == ("invalid_image_url", message)
    assert normalisations == []


async def test_it_refuses_a_data_url_that_holds_no_image() -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(data_url(b"hello, this is text"), fetches_image_urls=False)

    assert caught.value.code == "unsupported_format"
    assert caught.value.message == f"The image in the data: URL was refused: {NOT_AN_IMAGE}"


async def test_it_refuses_an_empty_data_url() -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url("data:image/png;base64,", fetches_image_urls=False)

    assert (caught.value.code, caught.value.message) == (
        "empty_file",
        "The image in the data: URL was refused: the file is empty.",
    )


async def test_it_refuses_a_data_url_larger_than_the_limit_before_normalising_it(
    settings: Any, normalisations: list[int]
) -> None:
    image = png_bytes(300, 200)
    settings.ATTACHMENT_MAX_BYTES = len(image) - 1

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(data_url(image), fetches_image_urls=False)

    assert caught.value.code == "too_large"
    assert caught.value.message == (
        f"The image in the data: URL is larger than the {len(image) - 1} bytes limit; send a smaller picture."
    )
    assert normalisations == []


async def test_it_takes_a_data_url_of_exactly_the_limit(settings: Any, normalisations: list[int]) -> None:
    image = png_bytes(300, 200)
    settings.ATTACHMENT_MAX_BYTES = len(image)

    result = await image_url_to_data_url(data_url(image), fetches_image_urls=False)

    assert jpeg_of(result).size == (300, 200)
    assert normalisations == [len(image)]


async def test_it_lets_the_caller_answer_busy_when_every_normalisation_slot_is_taken(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ATTACHMENT_NORMALISE_WAIT_SECONDS = 0
    taken = threading.BoundedSemaphore(1)
    taken.acquire()
    monkeypatch.setattr(uploads, "_slots", lambda concurrency: taken)

    with pytest.raises(uploads.UploadsBusy) as caught:
        await image_url_to_data_url(data_url(png_bytes()), fetches_image_urls=False)

    assert (caught.value.code, caught.value.retry_after) == ("busy", 2)


# Schemes


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://images.example.com/a.png", f"{NOT_A_URL_WE_TAKE} ftp: URLs are not accepted."),
        ("file:///etc/passwd", f"{NOT_A_URL_WE_TAKE} file: URLs are not accepted."),
        ("gopher://127.0.0.1:6379/_FLUSHALL", f"{NOT_A_URL_WE_TAKE} gopher: URLs are not accepted."),
        ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB", NOT_A_URL_WE_TAKE),
        ("", NOT_A_URL_WE_TAKE),
        ("not a url: at all", NOT_A_URL_WE_TAKE),
    ],
)
async def test_it_refuses_an_image_url_of_another_scheme(
    url: str, message: str, connections: list[tuple[str, int]]
) -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert (caught.value.code, caught.value.message) == ("invalid_image_url", message)
    assert connections == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1/a.png", "The image URL is not a valid URL (Invalid port: ':1')."),
        ("http:///a.png", "The image URL names no host; write http(s)://host/path."),
    ],
)
async def test_it_refuses_an_http_url_it_cannot_parse(url: str, message: str) -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert (caught.value.code, caught.value.message) == ("invalid_image_url", message)


async def test_it_refuses_an_http_url_from_a_key_that_may_not_fetch(
    image_server: ImageServer, connections: list[tuple[str, int]]
) -> None:
    image_server.routes["/image.png"] = serves(png_bytes())

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=False)

    assert (caught.value.code, caught.value.message) == ("image_url_not_allowed", NOT_ALLOWED_KEY)
    assert connections == []
    assert image_server.seen == []


# Fetches


async def test_it_fetches_an_image_url_and_normalises_the_image(
    image_server: ImageServer, connections: list[tuple[str, int]]
) -> None:
    image_server.routes["/image.png"] = serves(png_bytes(80, 60))

    result = await image_url_to_data_url(
        f"{image_server.base_url}/image.png?size=large", fetches_image_urls=True
    )

    assert jpeg_of(result).size == (80, 60)
    assert connections == [("127.0.0.1", image_server.port)]
    assert image_server.paths() == ["/image.png"]
    headers = image_server.seen[0].headers
    assert headers["host"] == f"127.0.0.1:{image_server.port}"
    assert headers["accept-encoding"] == "identity"
    assert headers["user-agent"] == "cs-platform-gateway (image_url fetch)"
    assert ("cookie" in headers, "authorization" in headers) == (False, False)


async def test_it_sends_no_credentials_from_the_url_or_cookies_from_an_earlier_hop(
    image_server: ImageServer,
) -> None:
    image_server.routes["/login"] = redirects("/image.png", headers={"Set-Cookie": "session=secret; Path=/"})
    image_server.routes["/image.png"] = serves(png_bytes())

    result = await image_url_to_data_url(
        f"http://user:password@127.0.0.1:{image_server.port}/login", fetches_image_urls=True
    )

    assert jpeg_of(result).size == (64, 48)
    assert image_server.paths() == ["/login", "/image.png"]
    for request in image_server.seen:
        assert ("cookie" in request.headers, "authorization" in request.headers) == (False, False)


async def test_it_connects_to_the_address_it_checked_and_names_the_host_it_was_given(
    image_server: ImageServer,
    connections: list[tuple[str, int]],
    resolves: Callable[[dict[str, list[str]]], list[str]],
) -> None:
    looked_up = resolves({"images.example.test": ["127.0.0.1"]})
    image_server.routes["/image.png"] = serves(png_bytes())

    result = await image_url_to_data_url(
        f"http://images.example.test:{image_server.port}/image.png", fetches_image_urls=True
    )

    assert jpeg_of(result).size == (64, 48)
    assert looked_up == ["images.example.test"]
    assert connections == [("127.0.0.1", image_server.port)]
    assert image_server.seen[0].headers["host"] == f"images.example.test:{image_server.port}"


async def test_it_refuses_an_image_url_that_answers_404(image_server: ImageServer) -> None:
    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(
            f"{image_server.base_url}/missing.png?token=secret", fetches_image_urls=True
        )

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at {image_server.base_url}/missing.png: the server answered HTTP 404."
    )


@pytest.mark.parametrize(
    ("content_type", "described"),
    [
        ("text/html; charset=utf-8", "text/html"),
        ("application/octet-stream", "application/octet-stream"),
        (None, "content of no type"),
    ],
)
async def test_it_refuses_an_image_url_that_answers_with_something_else_than_an_image(
    image_server: ImageServer, normalisations: list[int], content_type: str | None, described: str
) -> None:
    image_server.routes["/image.png"] = serves(png_bytes(), content_type=content_type)

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at {image_server.base_url}/image.png: "
        f"the server sent {described}, not an image."
    )
    assert normalisations == []


async def test_it_refuses_a_compressed_image_body(image_server: ImageServer) -> None:
    image_server.routes["/image.png"] = serves(png_bytes(), headers={"Content-Encoding": "gzip"})

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at {image_server.base_url}/image.png: "
        "the server sent it gzip-compressed; send images uncompressed."
    )


async def test_it_refuses_a_fetched_body_that_is_not_an_image(image_server: ImageServer) -> None:
    image_server.routes["/image.png"] = serves(b"<html>not really</html>")

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert caught.value.code == "unsupported_format"
    assert (
        caught.value.message == f"The image at {image_server.base_url}/image.png was refused: {NOT_AN_IMAGE}"
    )


@pytest.mark.parametrize("declared_length", [64 * 1024 * 1024, None])
async def test_it_stops_reading_a_body_over_the_limit(
    image_server: ImageServer, settings: Any, normalisations: list[int], declared_length: int | None
) -> None:
    settings.ATTACHMENT_MAX_BYTES = 100 * 1024
    image_server.routes["/huge.png"] = endless(image_server, "/huge.png", declared_length=declared_length)

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/huge.png", fetches_image_urls=True)

    assert caught.value.code == "too_large"
    assert caught.value.message == (
        f"The image at {image_server.base_url}/huge.png is larger than the 100 KB limit; "
        "send a smaller picture."
    )
    assert normalisations == []
    image_server.wait_finished("/huge.png")
    transfer = image_server.transfers["/huge.png"]
    assert transfer.cut_off is True
    # What the socket buffers took before the connection closed: far from the 64 MB the server meant to send.
    assert transfer.sent < 32 * 1024 * 1024


async def test_it_takes_a_fetched_body_of_exactly_the_limit(image_server: ImageServer, settings: Any) -> None:
    image = png_bytes(120, 90)
    settings.ATTACHMENT_MAX_BYTES = len(image)
    image_server.routes["/image.png"] = serves(image)

    result = await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert jpeg_of(result).size == (120, 90)


@pytest.mark.parametrize("route", [hangs, trickles])
async def test_it_cuts_a_fetch_off_at_the_time_limit(
    image_server: ImageServer, settings: Any, route: Callable[[ImageServer], Route]
) -> None:
    settings.GATEWAY_IMAGE_FETCH_TIMEOUT_SECONDS = 0.5
    image_server.routes["/slow.png"] = route(image_server)
    started = time.monotonic()

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/slow.png", fetches_image_urls=True)

    elapsed = time.monotonic() - started
    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at {image_server.base_url}/slow.png: "
        "it did not arrive in full within 0.5 s."
    )
    assert 0.45 <= elapsed < 2.0


async def test_it_reports_a_server_that_refuses_the_connection(settings: Any) -> None:
    settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    port = free_port()

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"http://127.0.0.1:{port}/image.png", fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at http://127.0.0.1:{port}/image.png: "
        "could not connect to the server (All connection attempts failed)."
    )


async def test_it_reports_a_host_name_that_does_not_resolve(
    monkeypatch: pytest.MonkeyPatch, connections: list[tuple[str, int]]
) -> None:
    async def host_resolve(host: str, port: int) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(images, "host_resolve", host_resolve)

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url("https://nowhere.example.test/a.png", fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        "Could not fetch the image at https://nowhere.example.test/a.png: "
        "could not connect to the server (the host name nowhere.example.test was not found)."
    )
    assert connections == []


# Redirects


async def test_it_follows_up_to_three_redirects(image_server: ImageServer) -> None:
    image_server.routes["/hop/3"] = redirects("/hop/2", status=301)
    image_server.routes["/hop/2"] = redirects(f"{image_server.base_url}/hop/1", status=307)
    image_server.routes["/hop/1"] = redirects("../image.png", status=308)
    image_server.routes["/image.png"] = serves(png_bytes())

    result = await image_url_to_data_url(f"{image_server.base_url}/hop/3", fetches_image_urls=True)

    assert jpeg_of(result).size == (64, 48)
    assert image_server.paths() == ["/hop/3", "/hop/2", "/hop/1", "/image.png"]


async def test_it_refuses_a_fourth_redirect(image_server: ImageServer) -> None:
    for hop in range(1, 5):
        image_server.routes[f"/hop/{hop}"] = redirects(f"/hop/{hop - 1}")
    image_server.routes["/hop/0"] = serves(png_bytes())

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/hop/4", fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at {image_server.base_url}/hop/4: it redirects more than 3 times."
    )
    assert image_server.paths() == ["/hop/4", "/hop/3", "/hop/2", "/hop/1"]


async def test_it_refuses_a_redirect_to_an_internal_address(
    image_server: ImageServer, other_loopback_server: ImageServer, connections: list[tuple[str, int]]
) -> None:
    image_server.routes["/image.png"] = redirects(f"{other_loopback_server.base_url}/image.png")

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert caught.value.code == "image_url_not_allowed"
    assert caught.value.message == internal(f"{image_server.base_url}/image.png", "127.0.0.2")
    assert connections == [("127.0.0.1", image_server.port)]
    assert other_loopback_server.seen == []


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/image.png"])
async def test_it_refuses_a_redirect_to_another_scheme(
    image_server: ImageServer, connections: list[tuple[str, int]], location: str
) -> None:
    image_server.routes["/image.png"] = redirects(location)

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message == (
        f"Could not fetch the image at {image_server.base_url}/image.png: "
        "it redirects to a URL that is not an http or https URL."
    )
    assert connections == [("127.0.0.1", image_server.port)]


# Internal addresses


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:{port}/image.png", "127.0.0.1"),
        ("http://localhost:{port}/image.png", "localhost"),
        ("http://0.0.0.0:{port}/image.png", "0.0.0.0"),  # noqa: S104 (a URL, nothing binds to it)
        ("http://2130706433:{port}/image.png", "2130706433"),
        ("http://[::1]:{port}/image.png", "::1"),
        ("http://[::ffff:127.0.0.1]:{port}/image.png", "::ffff:127.0.0.1"),
        ("http://10.1.2.3/image.png", "10.1.2.3"),
        ("http://172.16.0.1/image.png", "172.16.0.1"),
        ("http://192.168.1.1/image.png", "192.168.1.1"),
        ("http://100.64.0.1/image.png", "100.64.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://224.0.0.1/image.png", "224.0.0.1"),
        ("http://240.0.0.1/image.png", "240.0.0.1"),
        ("http://[fe80::1]/image.png", "fe80::1"),
        ("http://[fd00::1]/image.png", "fd00::1"),
        ("http://[ff02::1]/image.png", "ff02::1"),
        ("http://[::]/image.png", "::"),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", "::ffff:a9fe:a9fe"),
        ("http://[2002:a00:1::]/image.png", "2002:a00:1::"),
        ("http://[64:ff9b::a9fe:a9fe]/image.png", "64:ff9b::a9fe:a9fe"),
    ],
)
async def test_it_refuses_an_internal_address_outside_the_allowed_networks(
    settings: Any, connections: list[tuple[str, int]], url: str, host: str
) -> None:
    settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS = []
    url = url.format(port=free_port())

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert (caught.value.code, caught.value.message) == ("image_url_not_allowed", internal(url, host))
    assert connections == []


async def test_it_refuses_127_0_0_2_while_127_0_0_1_is_allowed(
    image_server: ImageServer, other_loopback_server: ImageServer, connections: list[tuple[str, int]]
) -> None:
    url = f"{other_loopback_server.base_url}/image.png"

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert (caught.value.code, caught.value.message) == ("image_url_not_allowed", internal(url, "127.0.0.2"))
    assert connections == []
    assert other_loopback_server.seen == []


async def test_it_fetches_from_an_allowed_network_given_as_a_wider_network(
    settings: Any, other_loopback_server: ImageServer
) -> None:
    settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.0/30"]

    result = await image_url_to_data_url(
        f"{other_loopback_server.base_url}/image.png", fetches_image_urls=True
    )

    assert jpeg_of(result).size == (64, 48)
    assert other_loopback_server.paths() == ["/image.png"]


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["fd12::7"],
        ["93.184.215.14", "10.0.0.7"],
        ["2606:2800:21f:cb07::1", "::1"],
    ],
)
async def test_it_refuses_a_host_name_that_resolves_to_an_internal_address(
    settings: Any,
    connections: list[tuple[str, int]],
    resolves: Callable[[dict[str, list[str]]], list[str]],
    addresses: list[str],
) -> None:
    settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS = []
    looked_up = resolves({"cdn.example.test": addresses})

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url("https://cdn.example.test/a.png?sig=abc", fetches_image_urls=True)

    assert caught.value.code == "image_url_not_allowed"
    assert caught.value.message == internal("https://cdn.example.test/a.png", "cdn.example.test")
    assert looked_up == ["cdn.example.test"]
    assert connections == []


async def test_it_refuses_a_redirect_to_a_host_name_that_resolves_to_an_internal_address(
    image_server: ImageServer,
    connections: list[tuple[str, int]],
    resolves: Callable[[dict[str, list[str]]], list[str]],
) -> None:
    looked_up = resolves({"metadata.example.test": ["169.254.169.254"]})
    image_server.routes["/image.png"] = redirects("http://metadata.example.test/latest/meta-data/")

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(f"{image_server.base_url}/image.png", fetches_image_urls=True)

    assert caught.value.code == "image_url_not_allowed"
    assert caught.value.message == internal(f"{image_server.base_url}/image.png", "metadata.example.test")
    assert looked_up == ["127.0.0.1", "metadata.example.test"]
    assert connections == [("127.0.0.1", image_server.port)]


# TLS: the connection goes to the checked address, the certificate is still checked against the URL's name.


@dataclass
class Certificates:
    """A test certificate authority and a server certificate it signed for one host name."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def certificates_for(host_name: str, directory: Any) -> Certificates:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def certificate(subject: str, key: Any, issuer: str, signing_key: Any, *, authority: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
        )
        if not authority:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority = certificate("Test image CA", authority_key, "Test image CA", authority_key, authority=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(host_name, server_key, "Test image CA", authority_key, authority=False)
    chain = directory / "server.pem"
    chain.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(chain)
    client_context = ssl.create_default_context(
        cadata=authority.public_bytes(serialization.Encoding.PEM).decode("ascii")
    )
    return Certificates(server=server_context, client=client_context)


@pytest.fixture
def tls_image_server(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[ImageServer]:
    """An https image server on 127.0.0.1 whose certificate names only images.example.test."""
    settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    certificates = certificates_for("images.example.test", tmp_path)
    monkeypatch.setattr(images, "_tls_context", lambda: certificates.client)
    server = ImageServer(tls=certificates.server).start()
    server.routes["/image.png"] = serves(png_bytes())
    try:
        yield server
    finally:
        server.stop()


async def test_it_verifies_the_certificate_against_the_url_host_name_not_the_address(
    tls_image_server: ImageServer,
    connections: list[tuple[str, int]],
    resolves: Callable[[dict[str, list[str]]], list[str]],
) -> None:
    resolves({"images.example.test": ["127.0.0.1"]})

    result = await image_url_to_data_url(
        f"https://images.example.test:{tls_image_server.port}/image.png", fetches_image_urls=True
    )

    assert jpeg_of(result).size == (64, 48)
    assert connections == [("127.0.0.1", tls_image_server.port)]
    assert tls_image_server.seen[0].headers["host"] == f"images.example.test:{tls_image_server.port}"


async def test_it_refuses_a_certificate_for_another_host_name(
    tls_image_server: ImageServer, resolves: Callable[[dict[str, list[str]]], list[str]]
) -> None:
    resolves({"other.example.test": ["127.0.0.1"]})
    url = f"https://other.example.test:{tls_image_server.port}/image.png"

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert caught.value.message.startswith(
        f"Could not fetch the image at {url}: could not connect to the server "
        "([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "Hostname mismatch, certificate is not valid for 'other.example.test'."
    )
    assert tls_image_server.seen == []


async def test_it_refuses_an_https_url_by_address_whose_certificate_names_a_host(
    tls_image_server: ImageServer,
) -> None:
    url = f"https://127.0.0.1:{tls_image_server.port}/image.png"

    with pytest.raises(GatewayImageError) as caught:
        await image_url_to_data_url(url, fetches_image_urls=True)

    assert caught.value.code == "image_fetch_failed"
    assert "IP address mismatch" in caught.value.message
    assert tls_image_server.seen == []
