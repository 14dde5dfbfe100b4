"""The images in /v1/chat/completions messages, turned into the normalised JPEG data: URLs the model is sent.

An image_url part is a base64 data: URL or, for API keys allowed to, an http(s) URL the platform
fetches. Either way the bytes go through the upload normaliser, so the model sees what a widget
upload would give it. A fetched URL is a request the caller makes the platform send, so it must
not reach what only the platform can reach (loopback, the private network, the cloud metadata
service at 169.254.169.254): every address the host resolves to is checked when the connection is
made, and the connection goes to the address that was checked, so a name that resolves to a
public address for a check and to an internal one a moment later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from functools import cache
from typing import Final

import httpcore
import httpx
from asgiref.sync import sync_to_async
from django.conf import settings

from conversations.images import ImageRejected, NormalisedImage
from conversations.uploads import image_normalise

__all__ = ["MAX_REDIRECTS", "GatewayImageError", "host_resolve", "image_url_to_data_url"]

# Redirects followed from an image URL (CDNs and link shorteners use one or two).
MAX_REDIRECTS: Final = 3

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_USER_AGENT: Final = "cs-platform-gateway (image_url fetch)"
# A URL in a message is cut to this many characters: the caller wrote it, the message need not repeat it all.
_SHOWN_URL_MAX_CHARS: Final = 200
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,19}")
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits; a NAT64 gateway would connect to it.
_NAT64_PREFIX: Final = ipaddress.IPv6Network("64:ff9b::/96")

_DATA_URL_EXAMPLE: Final = "data:image/png;base64,..."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class GatewayImageError(Exception):
    """An image part the gateway will not take; `message` is shown to the API caller (OpenAI error shape,
    HTTP 400, type invalid_request_error), `code` a short machine code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def image_url_to_data_url(url: str, *, fetches_image_urls: bool) -> str:
    """The image a chat message's image_url part names, as a data: URL of the normalised JPEG the model is
    sent."""
    scheme, separator, _rest = url.partition(":")
    scheme = scheme.lower()
    if separator and scheme == "data":
        data = _data_url_bytes(url)
        source = "The image in the data: URL"
    elif separator and scheme in ("http", "https"):
        if not fetches_image_urls:
            raise GatewayImageError(
                "image_url_not_allowed",
                f"This API key may send images only as data: URLs ({_DATA_URL_EXAMPLE}); send the image "
                "inline, or ask the platform's administrators to let the key fetch image URLs.",
            )
        data, shown = await _image_fetch(url)
        source = f"The image at {shown}"
    else:
        named = f" {scheme}: URLs are not accepted." if separator and _SCHEME.fullmatch(scheme) else ""
        raise GatewayImageError(
            "invalid_image_url",
            f"An image_url must be a data: URL ({_DATA_URL_EXAMPLE}) or an http or https URL.{named}",
        )
    normalised = await _normalise(data, source=source)
    return f"data:{normalised.content_type};base64,{base64.b64encode(normalised.data).decode('ascii')}"


async def host_resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` resolves to (itself for an IP literal), in the resolver's order, once each."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for family, _type, _protocol, _canonical_name, socket_address in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(socket_address[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _data_url_bytes(url: str) -> bytes:
    """The bytes a base64 data: URL holds, no more than ATTACHMENT_MAX_BYTES of them."""
    header, comma, payload = url[len("data:") :].partition(",")
    parameters = [parameter.strip().lower() for parameter in header.split(";")]
    media_type = parameters[0]
    if not comma or "base64" not in parameters[1:]:
        raise GatewayImageError(
            "invalid_image_url",
            f"An image data: URL must be base64-encoded, as in {_DATA_URL_EXAMPLE}.",
        )
    if not media_type.startswith("image/"):
        raise GatewayImageError(
            "invalid_image_url",
            f"An image data: URL must name an image type, as in {_DATA_URL_EXAMPLE}, "
            f"not {media_type or 'no type'}.",
        )
    try:
        # validate=True: characters outside the base64 alphabet are an error, not silently dropped.
        data = base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise GatewayImageError(
            "invalid_image_url",
            "The image data: URL's data is not valid base64; encode the file's bytes with standard "
            "base64 (A-Z, a-z, 0-9, + and /, padded with =).",
        ) from None
    # The request body limit bounds the base64 text; this check keeps a normalisation slot free.
    if len(data) > settings.ATTACHMENT_MAX_BYTES:
        raise _too_large("The image in the data: URL")
    return data


async def _normalise(data: bytes, *, source: str) -> NormalisedImage:
    """The upload normaliser's JPEG of `data`, run in a thread; a refusal says what was wrong."""
    try:
        return await sync_to_async(image_normalise, thread_sensitive=False)(data)
    except ImageRejected as rejected:
        raise GatewayImageError(
            rejected.code, f"{source} was refused: {_lowercase_first(rejected.detail)}"
        ) from None


async def _image_fetch(url: str) -> tuple[bytes, str]:
    """The body of the image at `url` (redirects followed) and the URL as messages show it."""
    try:
        current = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise GatewayImageError("invalid_image_url", f"The image URL is not a valid URL ({error}).") from None
    if not current.host:
        raise GatewayImageError(
            "invalid_image_url", "The image URL names no host; write http(s)://host/path."
        )
    shown = _url_shown(current)
    timeout_seconds = settings.GATEWAY_IMAGE_FETCH_TIMEOUT_SECONDS
    try:
        # One limit for everything (resolving, connecting, every redirect, the whole body): a server
        # that sends a byte a second stays within each per-read timeout but not within this.
        async with asyncio.timeout(timeout_seconds), _client(timeout_seconds) as client:
            return await _follow_redirects(client, current, shown=shown), shown
    except (TimeoutError, httpx.TimeoutException):
        raise _fetch_failed(shown, f"it did not arrive in full within {timeout_seconds:g} s") from None
    except _InternalAddress as refused:
        raise GatewayImageError(
            "image_url_not_allowed",
            f"The image URL {shown} resolves to an internal address (host {refused.host}); the gateway "
            "fetches images only from public addresses, so send this one as a data: URL.",
        ) from None
    except httpx.ConnectError as error:
        raise _fetch_failed(
            shown, f"could not connect to the server ({str(error) or 'the connection failed'})"
        ) from None
    except httpx.HTTPError as error:
        raise _fetch_failed(shown, f"the server's answer broke off or was not valid HTTP ({error})") from None


async def _follow_redirects(client: httpx.AsyncClient, url: httpx.URL, *, shown: str) -> bytes:
    """The image body at `url`, following at most MAX_REDIRECTS redirects, each hop fetched alike."""
    redirects = 0
    while True:
        # Built by hand, not with client.build_request or response.next_request: those add the
        # client's cookie jar, and nothing from the caller or an earlier hop may go along.
        request = httpx.Request(
            "GET",
            url.copy_with(userinfo=b""),
            headers={"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": _USER_AGENT},
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code not in _REDIRECT_STATUSES or "location" not in response.headers:
                return await _body_read(response, shown=shown)
            url = _redirect_target(url, response.headers["location"], shown=shown)
        finally:
            await response.aclose()
        redirects += 1
        if redirects > MAX_REDIRECTS:
            raise _fetch_failed(shown, f"it redirects more than {MAX_REDIRECTS} times")


def _redirect_target(url: httpx.URL, location: str, *, shown: str) -> httpx.URL:
    """The http(s) URL a redirect's Location header names, relative to `url`."""
    try:
        target = url.join(location)
    except httpx.InvalidURL:
        raise _fetch_failed(shown, "it redirects to an invalid URL") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise _fetch_failed(shown, "it redirects to a URL that is not an http or https URL")
    return target


async def _body_read(response: httpx.Response, *, shown: str) -> bytes:
    """The body of a final answer that is an image, read until it ends or passes ATTACHMENT_MAX_BYTES."""
    if response.status_code != 200:
        raise _fetch_failed(shown, f"the server answered HTTP {response.status_code}")
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not media_type.startswith("image/"):
        raise _fetch_failed(shown, f"the server sent {media_type or 'content of no type'}, not an image")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        # Asked for identity: a compressed body would be inflated past the byte limit before it was counted.
        raise _fetch_failed(shown, f"the server sent it {encoding}-compressed; send images uncompressed")
    max_bytes = settings.ATTACHMENT_MAX_BYTES
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(f"The image at {shown}")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(f"The image at {shown}")
    return bytes(body)


class _InternalAddress(Exception):
    """A host of an image URL resolves to an address image URLs may not reach."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host


class _CheckedAddressBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend that connects only to addresses image URLs may reach.

    It resolves the host itself and connects to the address it checked. TLS still verifies the
    URL's host name: httpcore takes the server_hostname for start_tls from the request's origin
    (httpcore/_async/connection.py, `_connect`), not from the address connected to.
    """

    def __init__(self, allowed_networks: list[IPNetwork]) -> None:
        self._allowed_networks = allowed_networks
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await host_resolve(host, port)
        except OSError:
            addresses = []
        if not addresses:
            raise httpcore.ConnectError(f"the host name {host} was not found")
        # Every address, not only the one connected to: a name must not point anywhere internal at all.
        if not all(_address_reachable(address, self._allowed_networks) for address in addresses):
            raise _InternalAddress(host)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("image URLs are fetched over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def _address_reachable(address: IPAddress, allowed_networks: list[IPNetwork]) -> bool:
    """Whether an image URL may connect to `address`: a public one, or one in an allowed network."""
    embedded = _embedded_ipv4(address)
    if any(candidate in network for candidate in (address, *embedded) for network in allowed_networks):
        return True
    return all(_public(candidate) for candidate in (address, *embedded))


def _public(address: IPAddress) -> bool:
    """Whether `address` is globally reachable and unicast."""
    # Python 3.11's is_global is true for multicast (224.0.0.0/4, ff00::/8): the rest is belt and braces.
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def _embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address leads to (IPv4-mapped, 6to4, Teredo, NAT64), which must pass too."""
    if isinstance(address, ipaddress.IPv4Address):
        return ()
    embedded: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in _NAT64_PREFIX:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return tuple(embedded)


def _allowed_networks() -> list[IPNetwork]:
    """GATEWAY_IMAGE_URL_ALLOWED_NETWORKS as networks (settings checked them at start-up)."""
    return [
        ipaddress.ip_network(network, strict=False) for network in settings.GATEWAY_IMAGE_URL_ALLOWED_NETWORKS
    ]


@cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context image fetches verify servers with (httpx's default: certifi, or SSL_CERT_FILE/DIR)."""
    return httpx.create_ssl_context()


def _client(timeout_seconds: float) -> httpx.AsyncClient:
    """A client for one image fetch: checked addresses, no proxies, cookies or netrc from the environment."""
    transport = httpx.AsyncHTTPTransport(verify=_tls_context(), trust_env=False)
    # httpx 0.28 has no parameter for httpcore's network backend (encode/httpx discussion #3180), so the
    # transport's connection pool is replaced by the same pool built with the checking backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=_tls_context(),
        network_backend=_CheckedAddressBackend(_allowed_networks()),
    )
    return httpx.AsyncClient(
        transport=transport, trust_env=False, timeout=timeout_seconds, follow_redirects=False
    )


def _url_shown(url: httpx.URL) -> str:
    """`url` as a message shows it: without user name, password, query or fragment, which may hold secrets."""
    shown = str(url.copy_with(userinfo=b"", query=None, fragment=None))
    if len(shown) > _SHOWN_URL_MAX_CHARS:
        return shown[: _SHOWN_URL_MAX_CHARS - 1] + "…"
    return shown


def _fetch_failed(shown: str, reason: str) -> GatewayImageError:
    return GatewayImageError("image_fetch_failed", f"Could not fetch the image at {shown}: {reason}.")


def _too_large(source: str) -> GatewayImageError:
    limit = settings.ATTACHMENT_MAX_BYTES
    return GatewayImageError(
        "too_large", f"{source} is larger than the {_bytes_described(limit)} limit; send a smaller picture."
    )


def _bytes_described(count: int) -> str:
    """A byte count for people ("10 MB", "512 KB", "900 bytes"), as the upload normaliser writes it."""
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"


def _lowercase_first(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:]
