"""JSON for scripts and front ends: the images most similar to one image.

Errors are JSON too, in one shape: ``{"error": {"status": 404, "message": "...", "fields": {...}}}``.
"""

from django import forms
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from similarity.selectors import images_similar_to

from . import selectors
from .models import Image


def json_error(status: int, message: str, fields: dict | None = None) -> JsonResponse:
    return JsonResponse({"error": {"status": status, "message": message, "fields": fields or {}}}, status=status)


class SimilarQuery(forms.Form):
    k = forms.IntegerField(required=False, min_value=1, max_value=settings.RECOMMENDATIONS_K_MAX)


def image_json(image: Image) -> dict:
    """Public facts only: the display rendition (never the original, which keeps camera data)."""
    picture = image.picture
    return {"id": image.pk, "caption": image.title, "url": picture.src or None}


@require_GET
def similar_images_json(request, pk: int):
    """The image and its k nearest neighbours; a fixed number of queries whatever k is."""
    query = SimilarQuery(request.GET)
    if not query.is_valid():
        return json_error(400, "Invalid parameters.", {name: errors[0] for name, errors in query.errors.items()})
    image = Image.objects.annotate_has_embedding().filter(pk=pk).first()
    if image is None:
        return json_error(404, f"No image with id {pk}.")
    k = query.cleaned_data["k"] or settings.RECOMMENDATIONS_K
    similar = images_similar_to(image=image, k=k) if image.has_embedding else []
    selectors.images_prefetch_renditions(images=[image, *(item.image for item in similar)])
    return JsonResponse(
        {
            "image": {**image_json(image), "has_embedding": image.has_embedding},
            "similar": [{**image_json(item.image), "similarity": round(item.similarity, 6)} for item in similar],
        }
    )
