"""Fetching a document from an address a user gave (an OpenAPI import by URL), without letting
that address reach the server's own network.

The server can reach what its users cannot: its loopback (the API itself, PostgreSQL, a cloud's
metadata service on a link-local address), the private network it sits in. An address that
resolves to any such place is refused unless the instance allows it (`allowPrivateUrls`). The
check is made on the address actually connected to: the name is resolved once, checked, and the
request goes to that address (the name still given as Host and for TLS), so a name that resolves
elsewhere the second time cannot slip past it; each redirect is checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

import httpx

from app.errors import BadRequest, Invalid, TooLarge

MAX_REDIRECTS = 5
TIMEOUT_S = 10.0


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local,
    shared, reserved, multicast or unspecified; an IPv4-mapped IPv6 address as its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _address(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`; BadRequest when it is not a public one."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise Invalid(f"cannot resolve {host}") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise BadRequest(
                    f"{host} is a loopback, private or link-local address ({address}): the server does not fetch "
                    "from its own network unless an instance admin allows it (PUT /api/v1/settings "
                    '{"allowPrivateUrls": true})'
                )
    return addresses[0]


async def fetch_text(url: str, limit: int, allow_private: bool = False) -> str:
    """The body of a GET of `url` as text (200 only, at most `limit` bytes, redirects followed
    and checked)."""
    async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise BadRequest("url must be an http(s) address")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await _address(parts.hostname, port, allow_private)
            literal = f"[{address}]" if ":" in address else address
            target = parts._replace(netloc=f"{literal}:{port}").geturl()
            request = client.build_request("GET", target, headers={"Host": parts.netloc.rpartition("@")[2]},
                                           extensions={"sni_hostname": parts.hostname})
            try:
                answer = await client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise Invalid(f"could not fetch {url}: {error}") from None
            try:
                if answer.is_redirect and "location" in answer.headers:
                    url = urllib.parse.urljoin(url, answer.headers["location"])
                    continue
                if answer.status_code != 200:
                    raise Invalid(f"fetching {url} answered {answer.status_code}")
                body = bytearray()
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise TooLarge(f"the document is larger than {limit} bytes")
                return body.decode(answer.encoding or "utf-8", "replace")
            except httpx.HTTPError as error:
                raise Invalid(f"could not fetch {url}: {error}") from None
            finally:
                await answer.aclose()
    raise Invalid(f"fetching {url} redirected more than {MAX_REDIRECTS} times")
