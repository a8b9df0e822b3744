"""Which database hosts the product may connect to: the ``CONNECTION_ALLOWED_HOSTS`` policy.

Plain Python (no Django) so the probe and the engine's connections enforce it too,
not only the forms that register a connection. Entries are host names,
``*.example.com`` wildcards (any name ending in ``.example.com``), IP addresses,
CIDR ranges, Unix-socket directories, or ``*`` for any TCP host. An empty list
allows any TCP host. CIDR ranges match hosts written as IP addresses only: names
are not resolved here, as a name's address can change between this check and
libpq's own lookup.

Some hosts are refused whatever the list allows: a comma-separated list (libpq
tries each host in turn, so one allowed name could smuggle in others), and a
Unix-socket directory (``/...`` or ``@...``, where local ``peer``/``trust`` rules
may let anyone in) unless that exact directory is listed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def is_socket_directory(host: str) -> bool:
    """Tell whether libpq reads ``host`` as a Unix-socket directory (``@`` is Linux's abstract namespace)."""
    return host.startswith(("/", "@"))


def _normalise_name(name: str) -> str:
    return name.lower().removesuffix(".")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def entry_problem(entry: str) -> str | None:
    """Return what is wrong with one ``CONNECTION_ALLOWED_HOSTS`` entry, or None when it is usable."""
    if entry == "*" or is_socket_directory(entry):
        return None
    if entry.startswith("*."):
        return None if _HOST_NAME.match(_normalise_name(entry[2:])) else f"{entry!r} is not a valid wildcard"
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    else:
        return None
    if _HOST_NAME.match(_normalise_name(entry)):
        return None
    return f"{entry!r} is not a host name, '*.domain' wildcard, IP address, CIDR range or socket directory"


def _matches(host: str, entry: str) -> bool:
    if entry == "*":
        return not is_socket_directory(host)
    if is_socket_directory(entry) or is_socket_directory(host):
        return is_socket_directory(entry) and host.rstrip("/") == entry.rstrip("/")
    if entry.startswith("*."):
        suffix = "." + _normalise_name(entry[2:])
        name = _normalise_name(host)
        return name.endswith(suffix) and len(name) > len(suffix)
    address = _ip(host)
    if address is not None:
        try:
            return address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    return _normalise_name(host) == _normalise_name(entry)


def host_problem(host: str, allowed: Sequence[str]) -> str | None:
    """Return why the product may not connect to ``host`` under the allow-list ``allowed``, or None."""
    if not host or any(ch.isspace() for ch in host):
        # An empty host makes libpq use its default Unix socket.
        return "Enter one host name, IP address or socket directory, without spaces."
    if "," in host:
        return "Enter a single host: lists of hosts (libpq multi-host) are not allowed."
    if any(_matches(host, entry) for entry in allowed):
        return None
    if is_socket_directory(host):
        return f"The Unix-socket directory {host!r} is not allowed: it must be listed in CONNECTION_ALLOWED_HOSTS."
    if not allowed:
        return None
    return f"The host {host!r} is not allowed by CONNECTION_ALLOWED_HOSTS."
