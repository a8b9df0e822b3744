"""What the commands share: the progress bar (a terminal and plain output), JSON output and error translation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management.base import CommandError, OutputWrapper
from django.core.serializers.json import DjangoJSONEncoder

from infra_site.cli import ProgressBar, application_errors, to_json
from infra_site.errors import Conflict


def test_on_a_terminal_the_bar_redraws_one_line_and_ends_it_on_close():
    out = StringIO()
    bar = ProgressBar(OutputWrapper(out), 4, tty=True, width=8)
    bar.advance("shared-us/tenant_us000", "succeeded")
    bar.advance("shared-us/tenant_us001", "failed")
    assert out.getvalue().split("\r")[1:] == [
        "[##------] 1/4 succeeded shared-us/tenant_us000" + " " * 28,
        "[####----] 2/4 failed    shared-us/tenant_us001" + " " * 28,
    ]
    bar.close()
    assert out.getvalue().endswith("\n")
    assert out.getvalue().count("\n") == 1


def test_without_a_terminal_each_target_is_a_line():
    out = StringIO()
    bar = ProgressBar(OutputWrapper(out), 2, tty=False)
    bar.advance("admin/public", "succeeded")
    bar.advance("analytics/public", "skipped")
    bar.close()
    assert out.getvalue().splitlines() == ["1/2 succeeded admin/public", "2/2 skipped analytics/public"]


def test_an_empty_bar_on_a_terminal_writes_nothing():
    out = StringIO()
    ProgressBar(OutputWrapper(out), 0, tty=True).close()
    assert out.getvalue() == ""


def test_a_label_is_cut_to_fifty_characters_on_a_terminal():
    out = StringIO()
    ProgressBar(OutputWrapper(out), 1, tty=True, width=4).advance("x" * 80, "running")
    assert "x" * 50 in out.getvalue()
    assert "x" * 51 not in out.getvalue()


def test_to_json_writes_uuids_datetimes_and_decimals():
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    text = to_json({"id": ident, "at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "ms": Decimal("1.5")})
    assert json.loads(text) == {"id": str(ident), "at": "2024-01-02T03:04:05Z", "ms": "1.5"}
    assert text.startswith('{\n  "id"')  # indented for people


def test_application_errors_become_command_errors_with_their_details():
    with pytest.raises(CommandError) as raised, application_errors():
        raise Conflict("Name taken.", details={"names": ["a", "b"], "empty": "", "none": None, "port": 5432})
    assert str(raised.value) == "Name taken.\n  names: a, b\n  port: 5432"
    assert isinstance(raised.value.__cause__, Conflict)


def test_other_errors_pass_through_application_errors():
    with pytest.raises(KeyError), application_errors():
        raise KeyError("not an application error")


def test_to_json_writes_a_list_of_objects_one_object_per_line_and_the_rest_indented():
    data = {
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "progress": {"total": 2, "nested": {"deep": [1, 2]}},
        "targets": [{"target": "a/s1", "error": None, "at": datetime(2024, 1, 2, tzinfo=UTC)}, {"target": "b/s2"}],
        "empty": [],
        "words": ["x", "y"],
        "text": "line\nbreak",
    }
    text = to_json(data)
    assert json.loads(text) == json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    lines = text.splitlines()
    assert '    {"target": "a/s1", "error": null, "at": "2024-01-02T00:00:00Z"},' in lines
    assert '    {"target": "b/s2"}' in lines
    assert '  "progress": {' in lines
    assert '    "nested": {' in lines
    assert '      "deep": [' in lines
    assert '  "text": "line\\nbreak"' in lines
    assert to_json({}) == "{}"
    assert json.loads(to_json([{"a": 1}])) == [{"a": 1}]
