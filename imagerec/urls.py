import re

from django.conf import settings
from django.contrib import admin
from django.http import Http404
from django.urls import include, path, re_path
from django.views.static import serve

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("imagerec.observability.urls")),
    path("", include("gallery.urls")),
]



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
