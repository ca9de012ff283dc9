"""Request guards: body sizes refused before the body is read, and the client's address behind proxies.

(The same under a real gunicorn and behind Caddy: tests/test_request_limits.py.)
"""

import io
import ipaddress
import uuid

import pytest
from django.conf import settings
from django.test import Client, RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from imagerec.middleware import client_address, request_body_limit
from tests.conftest import encode, photo_like

pytestmark = pytest.mark.django_db

# Every kind of path the site takes a body on, with the limit that must hold there.
PATHS = [
    ("/search/", "SEARCH_MAX_REQUEST_BYTES"),
    ("/api/search/", "SEARCH_MAX_REQUEST_BYTES"),
    ("/admin/gallery/image/add/", "ADMIN_MAX_REQUEST_BYTES"),
    ("/admin/login/", "ADMIN_MAX_REQUEST_BYTES"),
    ("/api/images/1/", "REQUEST_MAX_BYTES"),
    ("/images/1/", "REQUEST_MAX_BYTES"),
    ("/", "REQUEST_MAX_BYTES"),
]


class Unreadable:
    """A request body that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


def post_declaring(path: str, length: int, **extra):
    """A POST that declares ``length`` bytes of body, through the whole middleware stack."""
    return Client(raise_request_exception=False).generic(
        "POST", path, b"", CONTENT_TYPE="multipart/form-data; boundary=x", CONTENT_LENGTH=str(length),
        **{"wsgi.input": Unreadable()}, **extra,
    )


@pytest.mark.parametrize(("path", "setting"), PATHS)
def test_a_body_declared_larger_than_its_path_accepts_is_refused_unread(path, setting):
    limit = getattr(settings, setting)
    assert request_body_limit(path) == limit

    response = post_declaring(path, limit + 1)

    assert response.status_code == 413
    if path.startswith("/api/"):
        body = response.json()
        assert body["error"]["status"] == 413 and body["error"]["fields"] == {}
        assert "larger than" in body["error"]["message"]
    else:
        assert response["Content-Type"].startswith("text/html")
        assert b"larger than" in response.content


@given(path_and_setting=st.sampled_from(PATHS), excess=st.integers(min_value=1, max_value=2**62))
def test_any_length_over_a_paths_limit_is_refused(path_and_setting, excess):
    path, setting = path_and_setting
    assert post_declaring(path, getattr(settings, setting) + excess).status_code == 413


def test_a_photo_within_the_limit_is_searched(settings):
    settings.SEARCH_TIMEOUT_SECONDS = 0.1  # no worker here: the answer says it is busy
    photo = encode(photo_like(1))
    response = Client().post("/api/search/", {"photo": _file(photo)}, REMOTE_ADDR=_random_address())
    # Read, decoded and sent to the (absent) workers: not refused for its size.
    assert response.status_code == 503, response.content


def test_a_chunked_body_over_the_limit_is_refused_and_one_within_it_is_read(settings):
    settings.SEARCH_MAX_REQUEST_BYTES = 10_000
    settings.SEARCH_TIMEOUT_SECONDS = 0.1
    factory = RequestFactory()
    photo = encode(photo_like(2, (64, 48)), quality=70)
    assert len(photo) < 9_000
    within = factory.post("/api/search/", {"photo": _file(photo)})
    over = factory.post("/api/search/", {"photo": _file(photo + b"\0" * 10_000)})

    answers = []
    for request in (within, over):
        body = request.META["wsgi.input"].read()
        answers.append(_chunked_post(request, body))

    assert answers[0].status_code == 503, answers[0].content  # read and searched: no worker
    assert answers[1].status_code == 413


# --- The client's address behind proxies ---------------------------------------------------

ip_addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(
    proxies=st.integers(min_value=1, max_value=4),
    client=ip_addresses,
    forged=st.lists(st.one_of(ip_addresses, st.text(max_size=20).filter(lambda t: "," not in t)), max_size=4),
    hops=st.lists(ip_addresses, min_size=4, max_size=4),
)
def test_the_address_is_the_one_the_outermost_trusted_proxy_saw(proxies, client, forged, hops):
    # The client forges entries; the first trusted proxy appends the client's address, each
    # further one the address of the proxy before it; the last connects to the site.
    entries = [*forged, client, *hops[: proxies - 1]]
    request = RequestFactory().get("/", REMOTE_ADDR=hops[-1], HTTP_X_FORWARDED_FOR=", ".join(entries))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "TRUSTED_PROXY_COUNT", proxies)
        assert ipaddress.ip_address(client_address(request)) == ipaddress.ip_address(client)


@given(forwarded=st.text(max_size=80))
def test_without_trusted_proxies_x_forwarded_for_is_ignored(forwarded):
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR=forwarded)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "TRUSTED_PROXY_COUNT", 0)
        assert client_address(request) == "192.0.2.7"


@pytest.mark.parametrize("forwarded", ["", "not-an-address", "2001:db8::1, garbage"])
def test_a_request_that_did_not_come_through_the_proxy_counts_as_its_connecting_address(settings, forwarded):
    settings.TRUSTED_PROXY_COUNT = 1
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.8", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == "192.0.2.8"


def test_two_clients_behind_one_proxy_have_their_own_search_limits(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.SEARCH_RATE = "2/m"
    proxy, alice, bob = _random_address(), _random_address(), _random_address()

    def search(forwarded: str) -> int:
        # An empty form: refused (400) by the view, but counted by the rate limit first.
        return Client().post("/api/search/", {}, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded).status_code

    assert [search(alice), search(alice), search(alice)] == [400, 400, 429]
    # Bob, behind the same proxy, is not held back by Alice's searches...
    assert [search(bob), search(bob)] == [400, 400]
    # ...and Alice cannot escape her count by sending an X-Forwarded-For of her own.
    assert search(f"{_random_address()}, {alice}") == 429
    assert search(f"{bob}, {alice}") == 429


def test_without_a_trusted_proxy_a_forged_x_forwarded_for_does_not_escape_the_limit(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    settings.SEARCH_RATE = "2/m"
    address = _random_address()
    statuses = [
        Client().post("/api/search/", {}, REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=_random_address()).status_code
        for _ in range(3)
    ]
    assert statuses == [400, 400, 429]


def _random_address() -> str:
    """A fresh address: rate-limit counts live in Redis for a minute, across tests."""
    return str(ipaddress.IPv4Address(int(uuid.uuid4()) % (2**32 - 2**24) + 2**24))


def _file(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("photo.jpg", content, content_type="image/jpeg")


def _chunked_post(request, body: bytes):
    """``request``'s body sent again as a chunked one: no Content-Length, Transfer-Encoding set.

    A BytesIO stands for the server's decoded chunked stream: it gives what it has.
    """
    extra = {
        "CONTENT_TYPE": request.META["CONTENT_TYPE"],
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
        "REMOTE_ADDR": _random_address(),
    }
    return Client(raise_request_exception=False).generic("POST", request.path, b"", **extra)
