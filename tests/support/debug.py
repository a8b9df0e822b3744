"""The page Django's DEBUG mode shows for a failure, for tests that check what it leaves out."""

from __future__ import annotations

import sys

from django.views.debug import technical_500_response


def debug_page(request) -> str:
    """The page that DEBUG shows for a failure while serving ``request``."""
    try:
        raise RuntimeError("a failure while serving the request")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()
