"""Answers anonymous visitors' page requests from whole cached responses.

Placed right after WhiteNoise: a hit costs a URL match and one Redis round trip (``MGET`` of the
generation and the entry), skipping sessions, CSRF, authentication, messages, the view, its SQL
and its template. A miss runs the rest of the stack and keeps the response when it is the same
for everyone: a GET answered 200 by a ``public_page`` view, setting no cookie. Who counts as anonymous: a request without a session cookie or credentials (a signed-in
administrator always has one, and gets ``Cache-Control: private``).

With read replicas, a page is kept only once every replica has replayed the writes behind
the current generation (``store.replicas_caught_up``): a lagging replica's page is served, never kept.

Every kept page carries an ETag (a hash of its bytes): an unchanged page answers ``304 Not
Modified`` to ``If-None-Match``, from the cache as from the view.
"""

from __future__ import annotations

import functools
import hashlib
from types import SimpleNamespace

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, HttpResponseNotModified
from django.urls import Resolver404, ResolverMatch, get_urlconf, resolve
from django.utils.cache import get_conditional_response, patch_cache_control
from prometheus_client import Counter

from .store import DIRTY_KEY, GENERATION_KEY, cache_errors, generation_from, replicas_caught_up, scope_key

# Headers never kept: set per response by the stack, or per visitor.
NOT_KEPT = frozenset({"set-cookie", "date", "x-request-id"})
NOT_MODIFIED_HEADERS = frozenset({"cache-control", "content-location", "etag", "expires", "vary", "x-frame-options"})


@functools.cache
def page_cache_requests() -> Counter:
    """Made with the first middleware, not at import (gunicorn's multiprocess files)."""
    return Counter(
        "imagerec_page_cache_requests",
        "Requests for cacheable pages by result: hit, not_modified (a 304 from the cache), miss, "
        "private (a signed-in visitor's), unavailable (Redis down).",
        ["result"],
    )


@functools.lru_cache(maxsize=4096)
def page_view(path: str, urlconf: str) -> ResolverMatch | None:
    """The match of a ``public_page`` view at ``path``, else None. Kept per path: resolving walks
    the URL patterns, which cost a cached page about a sixth of its time."""
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return None
    return match if getattr(match.func, "page_cache", False) else None


def everyones(response) -> bool:
    """A whole 200 that sets no cookie: the same page for every anonymous visitor."""
    return response.status_code == 200 and not response.streaming and not response.cookies


def etag_of(body: bytes) -> str:
    return '"%s"' % hashlib.blake2b(body, digest_size=16).hexdigest()


class PageCacheMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.counter = page_cache_requests()

    def __call__(self, request):
        if not settings.PAGE_CACHE_ENABLED or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        match = page_view(request.path_info, get_urlconf() or settings.ROOT_URLCONF)
        if match is None:
            return self.get_response(request)
        if settings.SESSION_COOKIE_NAME in request.COOKIES or "HTTP_AUTHORIZATION" in request.META:
            self.counter.labels(result="private").inc()
            response = self.get_response(request)
            patch_cache_control(response, private=True, no_cache=True)
            return response
        return self._public(request, match)

    def _public(self, request, match):
        key = "page:" + hashlib.blake2b(
            "\n".join(
                (request.scheme, request.get_host(), request.get_full_path(), request.META.get("HTTP_ACCEPT", ""))
            ).encode("utf-8", "surrogateescape"),
            digest_size=20,
        ).hexdigest()
        # A revalidation reads the small tag first: a 304 never fetches the page's bytes.
        if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
        scope = scope_key(match.kwargs)
        try:
            wanted = [GENERATION_KEY, DIRTY_KEY, key + ":etag" if if_none_match else key]
            values = cache.get_many(wanted + [scope] if scope else wanted)
            # Valid while neither the whole cache's generation nor this URL's scope moved.
            stamp = (generation_from(values), values.get(scope, 0) if scope else 0)
            if if_none_match:
                tag = values.get(key + ":etag")
                if tag is not None and tag[0] == stamp and tag[1] in if_none_match:
                    self.counter.labels(result="not_modified").inc()
                    response = HttpResponseNotModified()
                    for name, value in tag[2]:
                        response[name] = value
                    request.resolver_match = SimpleNamespace(view_name=match.view_name)
                    return response
                values[key] = cache.get(key)
        except cache_errors():
            self.counter.labels(result="unavailable").inc()
            return self._headers(self.get_response(request))
        entry = values.get(key)
        if entry is not None and entry[0] == stamp:
            _, view_name, headers, body = entry
            # What the request metrics label it with, without resolving twice.
            request.resolver_match = SimpleNamespace(view_name=view_name)
            response = HttpResponse(body)
            for name, value in headers:
                response[name] = value
            response = get_conditional_response(request, etag=response["ETag"], response=response)
            self.counter.labels(result="hit" if response.status_code == 200 else "not_modified").inc()
            return response
        self.counter.labels(result="miss").inc()
        response = self._headers(self.get_response(request))
        if self._keepable(request, response) and self._fresh(stamp[0]):
            headers = [(name, value) for name, value in response.items() if name.lower() not in NOT_KEPT]
            # What a 304 repeats (RFC 9110 15.4.5): the validators and the caching headers.
            revalidation = [(name, value) for name, value in headers if name.lower() in NOT_MODIFIED_HEADERS]
            try:
                cache.set_many(
                    {
                        key: (stamp, match.view_name, headers, response.content),
                        key + ":etag": (stamp, response["ETag"], revalidation),
                    },
                    settings.PAGE_CACHE_SECONDS,
                )
            except cache_errors():
                pass
        if response.status_code == 200 and response.has_header("ETag"):
            response = get_conditional_response(request, etag=response["ETag"], response=response)
        return response

    @staticmethod
    def _headers(response):
        """ETag and a short public lifetime on a page anyone may see."""
        if everyones(response):
            if not response.has_header("ETag"):
                response["ETag"] = etag_of(response.content)
            patch_cache_control(response, public=True, max_age=settings.PAGE_CACHE_BROWSER_SECONDS)
        return response

    @staticmethod
    def _fresh(generation: int) -> bool:
        try:
            return replicas_caught_up(generation)
        except cache_errors():
            return False

    @staticmethod
    def _keepable(request, response) -> bool:
        renderer = getattr(response, "accepted_renderer", None)  # the API's browsable HTML has a form
        return request.method == "GET" and everyones(response) and (renderer is None or renderer.format == "json")
