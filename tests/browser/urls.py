"""The site's URLs with the renditions served by Django, as with SERVE_RENDITIONS=true.

The test settings leave SERVE_RENDITIONS off (a deployment's front server would serve them),
but a browser must load the pictures to show them.
"""

import re

from django.conf import settings
from django.urls import re_path

from imagerec.urls import renditions_serve
from imagerec.urls import urlpatterns as site_urlpatterns

_prefix = re.escape(settings.MEDIA_URL.lstrip("/") + "renditions/")
urlpatterns = [*site_urlpatterns, re_path(rf"^{_prefix}(?P<path>.*)$", renditions_serve)]
