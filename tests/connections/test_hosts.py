"""The CONNECTION_ALLOWED_HOSTS policy (no database)."""

import pytest

from connections.hosts import entry_problem, host_problem

ALLOWED = ["db.example.com", "*.fleet.example.com", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "/run/pg"]


@pytest.mark.parametrize(
    "host",
    [
        "db.example.com",
        "DB.Example.com.",
        "eu1.fleet.example.com",
        "a.b.fleet.example.com",
        "10.1.2.3",
        "2001:db8::5",
        "192.0.2.7",
        "/run/pg",
        "/run/pg/",
    ],
)
def test_listed_hosts_are_allowed(host):
    assert host_problem(host, ALLOWED) is None


@pytest.mark.parametrize(
    "host",
    [
        "other.example.com",
        "fleet.example.com",
        "evil-fleet.example.com",
        "eu1.fleet.example.com.evil.test",
        "11.0.0.1",
        "192.0.2.8",
        "/run/pg2",
        "/tmp",
        "@pg",
        "db.example.com,evil.test",
        "",
        " db.example.com",
        "db.example.com\n",
    ],
)
def test_other_hosts_are_refused(host):
    assert host_problem(host, ALLOWED)


def test_an_empty_list_allows_any_tcp_host_but_no_socket_directory_or_host_list():
    assert host_problem("anything.example.org", []) is None
    assert host_problem("127.0.0.1", []) is None
    assert "socket" in host_problem("/var/run/postgresql", [])
    assert "socket" in host_problem("@abstract", [])
    assert "single host" in host_problem("a,b", [])


def test_a_star_allows_any_tcp_host_but_no_socket_directory():
    assert host_problem("anything.example.org", ["*"]) is None
    assert host_problem("/var/run/postgresql", ["*"])


def test_names_are_not_resolved_against_cidr_ranges():
    assert host_problem("localhost", ["127.0.0.0/8"])


@pytest.mark.parametrize("entry", ["*", "db.example.com", "*.example.com", "10.0.0.0/8", "::1", "/run/pg", "@pg"])
def test_valid_entries(entry):
    assert entry_problem(entry) is None


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "db*.example.com", "*.", "db example.com", "*.exa mple.com"])
def test_invalid_entries_are_reported(entry):
    assert entry_problem(entry)
