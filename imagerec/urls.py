import re

from django.conf import settings
from django.contrib import admin
from django.http import Http404
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.utils.cache import get_conditional_response
from django.utils.http import parse_http_date, quote_etag
from django.views.generic import TemplateView
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("observability.urls")),
    path("", include("gallery.urls")),
    path("", include("clicks.urls")),
    # The API's OpenAPI schema (YAML; ?format=json for JSON) and its browsable documentation.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI's start-up script as a file of its own (?script), not inline: the
    # Content-Security-Policy runs none (templates/drf_spectacular/swagger_ui.html).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # The two addresses crawlers and browsers ask of every site.
    path("robots.txt", TemplateView.as_view(template_name="robots.txt", content_type="text/plain"), name="robots"),
    path("favicon.ico", lambda request: redirect(static("favicon.ico")), name="favicon"),
]

# Under /api/ these answer JSON in the API's error shape; elsewhere, Django's own pages.
handler400 = "imagerec.errors.bad_request"
handler404 = "imagerec.errors.page_not_found"
handler500 = "imagerec.errors.server_error"



def renditions_serve(request, path):
    try:
        response = serve(request, path, document_root=settings.MEDIA_ROOT / "renditions")
    except OSError:  # a name the file system cannot even look up (too long, say): no such file
        raise Http404 from None
    # A rendition's name is never reused for other content: browsers may keep it for good, as
    # behind the proxy (deploy/Caddyfile), and revalidate by ETag as Caddy's file server allows.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    if response.status_code != 200:
        return response
    modified = parse_http_date(response["Last-Modified"])
    response["ETag"] = quote_etag(f"{modified:x}-{int(response['Content-Length']):x}")
    conditional = get_conditional_response(request, etag=response["ETag"], last_modified=modified, response=response)
    if conditional is not response:
        response.close()
    return conditional


if settings.SERVE_RENDITIONS:
    # Renditions only: an original (camera metadata, GPS, any format) has no public URL.
    prefix = re.escape(settings.MEDIA_URL.lstrip("/") + "renditions/")
    urlpatterns += [
        re_path(rf"^{prefix}(?P<path>.*)$", renditions_serve),
    ]
