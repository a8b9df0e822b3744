"""The API's rate limits, counting anonymous callers by ``infra_site.client_address``."""

from __future__ import annotations

from rest_framework import throttling
from rest_framework.request import Request

from infra_site.client_address import client_address


class AnonRateThrottle(throttling.AnonRateThrottle):
    def get_ident(self, request: Request) -> str:
        return client_address(request)


class UserRateThrottle(throttling.UserRateThrottle):
    """Per user; anonymous callers per client address."""

    def get_ident(self, request: Request) -> str:
        return client_address(request)
