from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("imagerec.observability.urls")),
    path("", include("gallery.urls")),
]

if settings.DEBUG:
    # Local runs only; production serves media from its web server or object storage.
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
