"""Structured log lines and the test-suite guard that keeps passwords out of logs."""

import logging

from infra_site.logging import LogfmtFormatter
from tests.support.logs import RecordCollector, leaked_secrets
from tests.support.postgres import REGISTRY_PASSWORD


def test_logfmt_includes_extra_fields_and_quotes_values():
    record = logging.LogRecord("connections", logging.WARNING, __file__, 1, "check failed", (), None)
    record.connection = "eu-shared-1"
    record.error = 'FATAL: database "x" does not exist'
    line = LogfmtFormatter().format(record)
    assert "level=warning" in line
    assert "logger=connections" in line
    assert 'msg="check failed"' in line
    assert "connection=eu-shared-1" in line
    assert 'error="FATAL: database \\"x\\" does not exist"' in line


def test_the_log_guard_detects_a_password_in_a_record():
    collector = RecordCollector()
    logger = logging.getLogger("guard-check")
    logger.propagate = False  # keep the deliberate leak away from the suite-wide guard
    logger.addHandler(collector)
    try:
        logger.warning("connection failed", extra={"dsn": f"postgresql://u:{REGISTRY_PASSWORD}@h/db"})
    finally:
        logger.removeHandler(collector)
    assert leaked_secrets(collector.lines) == 1


def test_a_forbidden_admin_page_is_logged_as_one_line_without_a_traceback(client, make_user, caplog):
    from infra_site import roles

    client.force_login(make_user(roles.DATABASES_MANAGE))
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client.get("/admin/axes/accessattempt/").status_code == 403
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.status_code == 403
    assert record.exc_info is None
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    assert "Traceback" not in line
    assert "Forbidden" in line
