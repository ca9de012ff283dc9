"""JSON for scripts and front ends: the images most similar to one image."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from similarity.selectors import images_similar_to

from . import selectors
from .forms import requested_k


def image_json(image) -> dict:
    return {"id": image.pk, "caption": image.title, "url": image.file.url}


@require_GET
def similar_images_json(request, pk: int):
    """The image and its k nearest neighbours (?k= as on the page); a fixed number of queries."""
    image = selectors.image_get(image_id=pk)
    k = requested_k(request.GET.get("k"))
    similar = images_similar_to(image=image, k=k) if image.has_embedding else []
    return JsonResponse(
        {
            "image": {**image_json(image), "has_embedding": image.has_embedding},
            "similar": [
                {**image_json(item.image), "similarity": round(item.similarity, 6)} for item in similar
            ],
        }
    )
