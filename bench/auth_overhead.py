"""Benchmark: what a Keycloak bearer token costs per API request, against a session cookie.

Run: ``.venv/bin/python bench/auth_overhead.py`` (or ``make bench``). Starts the test OpenID Connect
provider (``tests/oidc_provider``) and the app under gunicorn (``manage.py serve``, one worker, its own
SQLite control database, ENVIRONMENT=testing, no rate limit), signs one user with ``migrations:read`` in
through the provider's login form (session cookie) and takes an access token of the same user, then times
``GET /api/v1/migrations/`` with each, in alternating rounds after a warm-up. Also checks that the timed
bearer requests made no call to the provider (keys cached). Prints the figures and writes them to
``bench/results/auth_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import RESULTS_DIR, write_results  # noqa: E402
from tests.oidc_provider.launcher import (  # noqa: E402
    APP_CLIENT_ID,
    APP_CLIENT_SECRET,
    REALM,
    OidcProvider,
    app_client,
    running_provider,
    submit_login_form,
)

RESULTS = RESULTS_DIR / "auth_overhead.json"
ENDPOINT = "/api/v1/migrations/"
USER = ("bench-reader", "bench-reader-password")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(provider: OidcProvider, port: int) -> Iterator[str]:
    """Migrate a fresh control database and serve the app on ``port`` with gunicorn until the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    env = {
        **os.environ,
        "ENV_FILE": os.devnull,
        "ENVIRONMENT": "testing",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "ADMIN_DATABASE_URL": f"sqlite:///{workdir / 'control.sqlite3'}",
        "KEYCLOAK_URL": provider.url,
        "KEYCLOAK_ADMIN_REALM": REALM,
        "KEYCLOAK_CLIENT_ID": APP_CLIENT_ID,
        "KEYCLOAK_CLIENT_SECRET": APP_CLIENT_SECRET,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True)
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def wait_until_serving(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/admin/login/", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"the app did not start serving at {base}")


def session_login(base: str) -> requests.Session:
    """Sign the user in through "Log in with Keycloak" and the provider's form; return the browser session."""
    browser = requests.Session()
    provider_page = browser.get(f"{base}/oidc/authenticate/?next=/admin/", timeout=10)
    callback = submit_login_form(browser, provider_page, *USER, stop_at=f"{base}/oidc/callback/")
    landed = browser.get(urljoin(callback.url, callback.headers["location"]), timeout=10)
    if landed.url != f"{base}/admin/":
        raise RuntimeError(f"the scripted login ended at {landed.url}")
    return browser


def timed_rate(http: requests.Session, url: str, headers: dict[str, str], count: int) -> float:
    """Return requests per second of ``count`` sequential GETs (each must answer 200)."""
    started = time.perf_counter()
    for _ in range(count):
        response = http.get(url, headers=headers, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return count / (time.perf_counter() - started)


def measure(base: str, provider: OidcProvider, *, rounds: int, requests_per_round: int) -> dict:
    browser = session_login(base)
    token = provider.user_tokens(*USER)["access_token"]
    url = f"{base}{ENDPOINT}"
    modes = {
        "bearer": (requests.Session(), {"Authorization": f"Bearer {token}"}),
        "session": (browser, {}),
    }
    for http, headers in modes.values():
        timed_rate(http, url, headers, 50)
    provider_calls = provider.requests_to()
    rates: dict[str, list[float]] = {name: [] for name in modes}
    for index in range(rounds):
        order = list(modes) if index % 2 == 0 else list(reversed(modes))
        for name in order:
            http, headers = modes[name]
            rates[name].append(timed_rate(http, url, headers, requests_per_round))
    summary = {
        name: {"best_rps": max(values), "median_rps": statistics.median(values), "rounds_rps": values}
        for name, values in rates.items()
    }
    # Each round times both modes back to back, so its difference cancels most of the machine's drift.
    paired = [1000 / bearer - 1000 / session for bearer, session in zip(rates["bearer"], rates["session"], strict=True)]
    per_request_ms = {
        "paired_rounds_median": statistics.median(paired),
        "best": 1000 / summary["bearer"]["best_rps"] - 1000 / summary["session"]["best_rps"],
    }
    return {
        "endpoint": f"GET {ENDPOINT}",
        "server": "manage.py serve (gunicorn, 1 sync worker), SQLite control database",
        "rounds": rounds,
        "requests_per_round": requests_per_round,
        "modes": summary,
        "bearer_extra_ms_per_request": per_request_ms,
        "provider_calls_during_timed_requests": provider.requests_to() - provider_calls,
    }


def report(result: dict) -> None:
    print(f"{result['endpoint']}: {result['rounds']} alternating rounds of {result['requests_per_round']} requests")
    for name, figures in result["modes"].items():
        print(f"  {name:<8} best {figures['best_rps']:8.1f} req/s   median {figures['median_rps']:8.1f} req/s")
    extra = result["bearer_extra_ms_per_request"]
    print(
        f"  bearer extra per request: {extra['paired_rounds_median']:+.3f} ms (median of the paired rounds), "
        f"{extra['best']:+.3f} ms (best against best)"
    )
    print(f"  provider calls during the timed requests: {result['provider_calls_during_timed_requests']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300, help="requests per round and mode")
    args = parser.parse_args()
    port = free_port()
    user = {"username": USER[0], "password": USER[1], "realmRoles": ["migrations:read"]}
    clients = [app_client(f"http://127.0.0.1:{port}/oidc/callback/")]
    with running_provider(clients, [user]) as provider, app_server(provider, port) as base:
        result = measure(base, provider, rounds=args.rounds, requests_per_round=args.requests)
    report(result)
    write_results(RESULTS, result)


if __name__ == "__main__":
    main()
