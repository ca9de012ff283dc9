"""A real headless Chromium (Debian's `chromium`, driven by Playwright) against the live server.

Playwright's own browser downloads are not used: the browser is the system's. Without
Chromium or Playwright these tests skip and say why, except under CI=true, where they fail.
Screenshots go to the test's own folder and to ``<test data dir>/artefacts/browser``, which
outlives the session (the path is printed at the end of the run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings

# Chromium as a quiet, offline test browser: no sandbox (tests may run as root in a
# container), no GPU, and none of its background calls home.
CHROMIUM_ARGUMENTS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
ARTEFACTS_DIR = Path(settings.TEST_DATA_DIR) / "artefacts" / "browser"
_saved_screenshots: list[Path] = []


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed (pip install -r requirements.txt)")
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("Chromium is not installed (Debian: apt-get install chromium; make test tries as root)")
    return executable


@pytest.fixture
def chromium(chromium_executable, transactional_db, monkeypatch):
    """A browser for one test, started after its database and closed before the database is emptied.

    Playwright's synchronous API keeps an asyncio loop marked as running in this thread, which
    Django takes for an async context and refuses database calls in. No Django code runs in
    that loop, so the check is lifted for browser tests only, as Playwright's documentation
    advises for Django.
    """
    from django.db import connections
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGUMENTS)
        yield browser
        browser.close()
        # While that loop runs, Django keeps this thread's connections apart (asgiref's
        # context-local storage): close them here, or they outlive the test database.
        connections.close_all()


@pytest.fixture(scope="session")
def live_server(django_db_setup, live_server):
    """pytest-django's live server, started after the test database is made, so stopped (and
    its database connections closed) before the database is dropped."""
    return live_server


@pytest.fixture
def site(transactional_db, live_server, settings, monkeypatch):
    """The live server's URL, with renditions served so that pictures load.

    The server's request threads live as long as the browser keeps a connection alive, so
    they close their database connections after each request instead of keeping them.
    """
    from django.db import connections

    settings.ROOT_URLCONF = "tests.browser.urls"
    for connection in connections.all():
        monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    return live_server.url


# What a strict deployment would send: scripts from the site's own files only, so an inline
# script or event handler would not run (and would show up as an error below).
# Images may also be data: URLs (the empty icon) and elements may carry a style attribute
# (the placeholders' aspect ratio).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; img-src 'self' data:; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; object-src 'none'; base-uri 'none'"
)


def _with_content_security_policy(route):
    if route.request.resource_type != "document" or route.request.method != "GET":
        route.continue_()
        return
    # A redirect goes back to the browser, which follows it itself (and shows its address).
    response = route.fetch(max_redirects=0)
    if "content-security-policy" in response.headers:  # the site's own policy, when it sends one
        route.fulfill(response=response)
        return
    route.fulfill(response=response, headers={**response.headers, "content-security-policy": CONTENT_SECURITY_POLICY})


def _unexpected(page, message) -> bool:
    """An error in the console, other than the one a page that answers 404 (as it should) logs."""
    if message.type != "error":
        return False
    return not (message.location.get("url") == page.url and "status of 404" in message.text)


@pytest.fixture
def new_page(chromium, site):
    """new_page(**context_options) -> a page in a fresh browser context on the live site.

    Pages are served under a strict Content-Security-Policy, and any script error or
    console error (a refused inline script among them) fails the test.
    """
    contexts, errors = [], []

    def make(**options):
        context = chromium.new_context(base_url=site, **{"viewport": VIEWPORT, **options})
        context.set_default_timeout(15_000)
        context.route("**/*", _with_content_security_policy)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        page.on("console", lambda message: _unexpected(page, message) and errors.append(f"{page.url}: {message.text}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, "\n".join(errors)


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def screenshot(tmp_path):
    """screenshot(page, name) -> the PNG's path, also kept in the artefacts folder."""

    def save(page, name: str, full_page: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=path, full_page=full_page)
        ARTEFACTS_DIR.mkdir(parents=True, exist_ok=True)
        kept = ARTEFACTS_DIR / path.name
        shutil.copyfile(path, kept)
        _saved_screenshots.append(kept)
        return path

    return save


def pytest_terminal_summary(terminalreporter):
    if _saved_screenshots:
        terminalreporter.write_line(f"Browser screenshots ({len(_saved_screenshots)}) in {ARTEFACTS_DIR.resolve()}")
