"""Request parsers of the API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering a document nested deeper than the interpreter can parse with a 400.

    ``json`` raises ``RecursionError`` (not the ``ValueError`` DRF turns into a ParseError) at about 1,000 levels.
    """

    def parse(self, stream, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
