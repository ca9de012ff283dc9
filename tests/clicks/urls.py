"""The site's URLs, plus a cached page that names its similar list as the image page does.

``/shown/<pk>/?list=34:visual,56:hybrid`` shows that list under image ``pk``; ``&comparison=``
says how it was made ("single" without it).
"""

from django.http import HttpResponse
from django.urls import path

from clicks.recording import SHOWN_HEADER, shown_header_value
from imagerec.urls import urlpatterns as site_urlpatterns
from pagecache.views import public_page


def shown_page(request, pk):
    shown = [(int(target), variant) for target, variant in (item.split(":") for item in request.GET["list"].split(","))]
    response = HttpResponse(f"<p>Image {pk} and {len(shown)} similar images</p>")
    comparison = request.GET.get("comparison", "single")
    response[SHOWN_HEADER] = shown_header_value(source_id=pk, shown=shown, comparison=comparison)
    return response


urlpatterns = [
    path("shown/<int:pk>/", public_page(shown_page), name="shown"),
    *site_urlpatterns,
]
