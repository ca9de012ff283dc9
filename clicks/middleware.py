"""Counts the similar-image lists visitors are shown, pages from the page cache included."""

from __future__ import annotations

from django.conf import settings

from .recording import SHOWN_HEADER, event_record, impression_event, request_may_be_counted


class ImpressionMiddleware:
    """Records one impression per counted page that names, in ``X-Imagerec-Shown``, the list it
    shows; removes that header from every response, so it never reaches a client.

    Placed just outside ``PageCacheMiddleware``: the header is kept with the cached page, so a
    page answered from the cache is counted like one the view computed, with no SQL, and one
    Redis round trip per CLICKS_IMPRESSION_BATCH pages. A response without the header costs a
    dictionary lookup.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        shown = response.get(SHOWN_HEADER)
        if shown is None:
            return response
        del response[SHOWN_HEADER]
        if (
            response.status_code == 200
            and settings.CLICKS_RECORDING
            and request_may_be_counted(request)
        ):
            event_record(impression_event(shown_header=shown), kind="impression", batch=settings.CLICKS_IMPRESSION_BATCH)
        return response
