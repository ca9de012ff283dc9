import re

from django.conf import settings
from django.contrib import admin
from django.http import Http404
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("observability.urls")),
    path("", include("gallery.urls")),
    # The API's OpenAPI schema (YAML; ?format=json for JSON) and its browsable documentation.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
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
        return serve(request, path, document_root=settings.MEDIA_ROOT / "renditions")
    except OSError:  # a name the file system cannot even look up (too long, say): no such file
        raise Http404 from None


if settings.SERVE_RENDITIONS:
    # Renditions only: an original (camera metadata, GPS, any format) has no public URL.
    prefix = re.escape(settings.MEDIA_URL.lstrip("/") + "renditions/")
    urlpatterns += [
        re_path(rf"^{prefix}(?P<path>.*)$", renditions_serve),
    ]
