"""Project-wide request guards."""

from django.core.exceptions import BadRequest


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
