"""Project-wide request guards: NUL bytes in URLs, request body sizes, the client's address."""

import io
import ipaddress
import tempfile

from django.conf import settings
from django.core.exceptions import BadRequest, ImproperlyConfigured
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat

from imagerec.errors import is_api, json_error


class RejectNulBytesMiddleware:
    """Answer 400 to a URL carrying a NUL byte (``%00``) anywhere.

    PostgreSQL text cannot hold NUL, so such a value reaching a query (an image name, an
    admin filter or search) raised an error deep in the database driver: a 500. No page of
    this site takes one, so the request is refused before any view runs. Form fields are
    covered by Django's own ProhibitNullCharactersValidator.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.GET
        if "\x00" in request.path or any("\x00" in key or "\x00" in value for key in query for value in query.getlist(key)):
            raise BadRequest("A URL of this site never contains a NUL byte.")
        return self.get_response(request)


# The paths that take more than a small form or JSON document, and the setting of their limit.
BODY_LIMITS = (
    ("/search/", "SEARCH_MAX_REQUEST_BYTES"),
    ("/api/search/", "SEARCH_MAX_REQUEST_BYTES"),
    ("/admin/", "ADMIN_MAX_REQUEST_BYTES"),
    # The first match counts: the hash check is small JSON, the upload beside it one file or zip.
    ("/api/uploads/check/", "REQUEST_MAX_BYTES"),
    ("/api/uploads/", "UPLOAD_MAX_REQUEST_BYTES"),
)


def request_body_limit(path: str) -> int:
    """The most bytes a request to ``path`` may carry."""
    for prefix, setting in BODY_LIMITS:
        if path.startswith(prefix):
            return getattr(settings, setting)
    return settings.REQUEST_MAX_BYTES


def request_too_large(request, limit: int) -> HttpResponse:
    message = f"This request is larger than the {filesizeformat(limit)} this address accepts."
    if is_api(request):
        # The API's error shape, answered before any view exists to shape it.
        return json_error(413, message)
    return render(request, "413.html", {"message": message}, status=413)


class RequestBodyLimitMiddleware:
    """Answer 413 to a request body larger than its path accepts, before reading it.

    A declared Content-Length over the limit is refused at once: nothing of the body is read,
    so nothing of it is spooled to disk (Django writes uploads over FILE_UPLOAD_MAX_MEMORY_SIZE
    to temporary files as it parses them, whatever size the view then accepts).

    A chunked body has no length to check. Django reads such a body as empty (WSGIRequest
    limits its stream to CONTENT_LENGTH, absent here), so it is read here instead, up to one
    byte past the limit: over it, 413 and the rest is never read; within it, the body is
    handed on with its length as if it had been declared.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = request_body_limit(request.path)
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False  # Django reads such a body as empty
            if too_large:
                return request_too_large(request, limit)
        elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            try:
                body = read_at_most(request.META["wsgi.input"], limit)
            except Exception as error:
                # Each server raises its own errors on a malformed or cut-off chunked body
                # (gunicorn: ParseException subclasses, NoMoreData): the client's fault.
                raise BadRequest("The chunked request body could not be read.") from error
            if body is None:
                return request_too_large(request, limit)
            size = body.seek(0, io.SEEK_END)
            body.seek(0)
            request.META["CONTENT_LENGTH"] = str(size)
            # WSGIRequest made its stream from the original input, limited to 0 bytes.
            request._stream = LimitedStream(body, size)
            try:
                return self.get_response(request)
            finally:
                body.close()
        return self.get_response(request)


def read_at_most(stream, limit: int):
    """``stream`` copied to a spooled temporary file, or None when it holds more than ``limit`` bytes."""
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
    remaining = limit + 1
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            return body
        body.write(chunk)
        remaining -= len(chunk)
    body.close()
    return None


def client_address(request) -> str:
    """The visitor's address, as the outermost of TRUSTED_PROXY_COUNT proxies saw it.

    Each proxy appends the address it was reached from to X-Forwarded-For; a client may send
    any entries of its own, which end up on the left. So the entry TRUSTED_PROXY_COUNT from
    the right is the one the outermost trusted proxy wrote, and what a client forged never counts.
    With no trusted proxy, or a request that did not come through all of them, the connecting
    address. django-ratelimit keys its counts with it (RATELIMIT_IP_META_KEY).
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies > 0 and forwarded:
        entries = [entry.strip() for entry in forwarded.split(",")]
        if len(entries) >= proxies:
            try:
                return str(ipaddress.ip_address(entries[-proxies]))
            except ValueError:
                pass  # not written by a proxy of ours after all
    address = request.META.get("REMOTE_ADDR", "")
    if not address:
        raise ImproperlyConfigured(
            "A request without REMOTE_ADDR (a server on a Unix socket): set TRUSTED_PROXY_COUNT to the "
            "number of proxies in front, which pass the client's address in X-Forwarded-For."
        )
    return address
