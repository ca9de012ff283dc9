"""The site's answers to errors that Django raises before or after any view.

Under /api/ they are JSON in the API's one error shape,
``{"error": {"status": 404, "message": "...", "fields": {"k": "..."}}}``; every other page keeps
Django's HTML (the site's own templates). The API's views answer their own errors in the same
shape through ``json_error``, and so does the request body limit (imagerec.middleware), which
answers before any view exists. Nothing here imports an app.
"""

from django.http import JsonResponse
from django.views import defaults


def json_error(status: int, message: str, fields: dict | None = None) -> JsonResponse:
    return JsonResponse({"error": {"status": status, "message": message, "fields": fields or {}}}, status=status)


def is_api(request) -> bool:
    return request.path.startswith("/api/")


# handler400: a NUL byte refused by the middleware, an unknown host, an unreadable body.
def bad_request(request, exception):
    return json_error(400, "Bad request.") if is_api(request) else defaults.bad_request(request, exception)


# handler404: an unknown URL (the API's views answer an unknown image themselves).
def page_not_found(request, exception):
    return json_error(404, "No such URL in the API.") if is_api(request) else defaults.page_not_found(request, exception)


# handler500: a crash; the message names nothing of it.
def server_error(request):
    return json_error(500, "Server error.") if is_api(request) else defaults.server_error(request)
