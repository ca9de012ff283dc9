"""The JSON API's shapes: what an image looks like to scripts, and what they may send.

The OpenAPI schema at /api/schema/ is generated from these classes, so the documentation is
the code that answers. Only renditions have URLs: an original keeps its camera metadata.
URLs are as the site serves them (relative to it, unless MEDIA_URL names another host).
"""

from django.conf import settings
from django.http import Http404
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import selectors
from .models import ArchiveUpload, Image, Tag
from .services import tag_names_too_long, tags_from_text
from .validation import picture_validate

NULLABLE_URL = serializers.CharField(allow_null=True, help_text="null until the renditions are made.")


class TagSerializer(serializers.ModelSerializer):
    # Slugs keep non-ASCII letters (allow_unicode): the model field's pattern, \w, is ASCII-only
    # in the JSON Schema regex dialect, so the schema would call "ã6" invalid.
    slug = serializers.CharField(read_only=True, help_text="For ?tag=; may contain non-ASCII letters.")

    class Meta:
        model = Tag
        fields = ["name", "slug"]


class RenditionSerializer(serializers.Serializer):
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    url = serializers.CharField()


class ImageCardSerializer(serializers.Serializer):
    """Enough to show an image in a list: the same facts as a gallery card."""

    id = serializers.IntegerField(read_only=True)
    caption = serializers.CharField(source="title", read_only=True, help_text="The caption, or the file name.")
    url = serializers.SerializerMethodField(help_text="The display rendition (the largest).")
    thumbnail_url = serializers.SerializerMethodField(help_text="The smallest rendition, for lists.")
    api_url = serializers.SerializerMethodField(help_text="This image in the API.")

    @extend_schema_field(NULLABLE_URL)
    def get_url(self, image: Image) -> str | None:
        return image.picture.src or None

    @extend_schema_field(NULLABLE_URL)
    def get_thumbnail_url(self, image: Image) -> str | None:
        return image.thumbnail.src or None

    def get_api_url(self, image: Image) -> str:
        return reverse("gallery:api-image-detail", args=[image.pk])


class ImageListItemSerializer(ImageCardSerializer):
    tags = TagSerializer(many=True, read_only=True)
    embedding_status = serializers.ChoiceField(choices=Image.Status.choices, read_only=True)


class ImageDetailSerializer(ImageListItemSerializer):
    width = serializers.IntegerField(read_only=True, help_text="The original's width in pixels.")
    height = serializers.IntegerField(read_only=True, help_text="The original's height in pixels.")
    has_embedding = serializers.BooleanField(
        read_only=True, help_text="Whether the image has a vector from the model in use (it can have neighbours)."
    )
    renditions = serializers.SerializerMethodField(help_text="Each display size, smallest first.")
    srcset = serializers.SerializerMethodField(help_text="The renditions as an <img srcset> value.")
    created_at = serializers.DateTimeField(read_only=True)

    @extend_schema_field(RenditionSerializer(many=True))
    def get_renditions(self, image: Image) -> list[dict]:
        return [{"width": width, "height": height, "url": url} for width, height, url in image.rendition_sizes]

    def get_srcset(self, image: Image) -> str:
        return image.picture.srcset


class ImageUpdateSerializer(serializers.Serializer):
    """A staff edit: the caption, and/or the whole set of tags (by name; new names make new tags)."""

    caption = serializers.CharField(required=False, allow_blank=True, max_length=300)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=Tag._meta.get_field("name").max_length), required=False, max_length=50
    )


class SimilarImageSerializer(ImageCardSerializer):
    similarity = serializers.FloatField(read_only=True, help_text="Cosine similarity, from 0 (unlike) to 1 (the same).")
    variant = serializers.ChoiceField(
        choices=["visual", "hybrid"], read_only=True,
        help_text="The list that put the image here: `visual` (nearest by the picture) or `hybrid` "
        "(re-ranked by what visitors chose from this image).",
    )

    def to_representation(self, item):
        # An item is a Recommendation or SimilarImage (image, similarity): the card describes its image.
        return {
            **ImageCardSerializer().to_representation(item.image),
            "similarity": round(item.similarity, 6),
            "variant": getattr(item, "variant", "visual"),
        }


class ImageWithStatusSerializer(ImageCardSerializer):
    has_embedding = serializers.BooleanField(read_only=True)


class SimilarImagesSerializer(serializers.Serializer):
    image = ImageWithStatusSerializer()
    similar = SimilarImageSerializer(many=True)


class SearchResultSerializer(serializers.Serializer):
    similar = SimilarImageSerializer(many=True)


def _tag_from_slug(slug: str):
    try:
        return selectors.tag_get(slug=slug)
    except Http404:
        raise serializers.ValidationError(f"No tag {slug!r}.") from None


class TagQuery(serializers.Serializer):
    tag = serializers.CharField(required=False, help_text="A tag's slug: only images with that tag.")

    def validate_tag(self, slug: str):
        return _tag_from_slug(slug)


def k_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.RECOMMENDATIONS_K_MAX,
        help_text=f"How many images (1 to {settings.RECOMMENDATIONS_K_MAX}); default RECOMMENDATIONS_K.",
    )


class SimilarQuery(TagQuery):
    k = k_field()
    variant = serializers.ChoiceField(
        choices=["visual", "hybrid"], required=False, default=None, allow_null=True,
        help_text="`visual`: the nearest images by the picture. `hybrid`: those re-ranked by what "
        "visitors chose from this image, with images they often chose that the picture alone would "
        "not find. Without it, the site's comparison (CLICKS_COMPARISON): the two lists "
        "interleaved, each item naming its list, or one list per image.",
    )
    diverse = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Spread the list over more kinds of picture (maximal marginal relevance); "
        "default DIVERSITY_DEFAULT.",
    )


class SearchRequest(TagQuery):
    photo = serializers.FileField(
        help_text="JPEG, PNG, WebP, GIF, BMP or TIFF, judged like an admin upload; used for this search only, not kept."
    )
    k = k_field()

    def validate_photo(self, photo):
        """The decoded picture; a Django ValidationError with the reason becomes this field's error."""
        return picture_validate(photo)


class ImagePageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Images in the whole list.")
    next = serializers.CharField(allow_null=True, help_text="The next page's URL; null on the last page.")
    previous = serializers.CharField(allow_null=True, help_text="The previous page's URL; null on the first.")
    results = ImageListItemSerializer(many=True)


class PageQuery(serializers.Serializer):
    page = serializers.IntegerField(required=False, min_value=1, help_text="From 1; past the last page is a 404.")
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=100, help_text="Default GALLERY_PAGE_SIZE, at most 100."
    )


class ImageListQuery(TagQuery, PageQuery):
    pass


# --- Uploads (staff) -------------------------------------------------------------------------

# "$", not "\Z": the pattern is also the schema's, in the JSON Schema (ECMA) dialect. A newline
# after it is trimmed away by the field anyway.
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def _tags_from_text(text: str) -> list[str]:
    """Comma-separated names, refused as the admin's form refuses them (one too long)."""
    names = tags_from_text(text)
    too_long = tag_names_too_long(names)
    if too_long:
        raise serializers.ValidationError(too_long)
    return names


class UploadCheckRequest(serializers.Serializer):
    sha256 = serializers.ListField(
        child=serializers.RegexField(
            SHA256_PATTERN,
            error_messages={"invalid": "A content hash is the SHA-256 of the file's bytes: 64 lowercase hexadecimal digits."},
        ),
        help_text="SHA-256 of each file's bytes, 64 lowercase hexadecimal digits; at most UPLOAD_CHECK_MAX (1000) per request.",
    )
    tags = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="Optional tags for the images already there, separated by commas (as the upload's `tags`).",
    )

    def validate_sha256(self, hashes: list[str]) -> list[str]:
        limit = settings.UPLOAD_CHECK_MAX  # read per request, like the other settings the API follows
        if len(hashes) > limit:
            raise serializers.ValidationError(f"At most {limit} hashes per request; this one has {len(hashes)}.")
        return hashes

    def validate_tags(self, text: str) -> list[str]:
        return _tags_from_text(text)


class KnownImageSerializer(serializers.Serializer):
    sha256 = serializers.CharField(help_text="One of the hashes asked about.")
    image = ImageListItemSerializer(help_text="The gallery's image with that content.")


class UploadCheckResultSerializer(serializers.Serializer):
    known = KnownImageSerializer(many=True, help_text="Only the hashes the gallery already holds.")


class UploadRequest(serializers.Serializer):
    # Empty files too: the service refuses them, in the admin form's words.
    file = serializers.FileField(
        allow_empty_file=True,
        help_text="One image (JPEG, PNG, WebP, GIF, BMP or TIFF), or a zip archive of them, expanded by a worker.",
    )
    path = serializers.CharField(
        required=False, allow_blank=True, max_length=1000,
        help_text="The file's path in the folder it was dropped with (trip/day1/IMG_1.jpg): the name shown.",
    )
    caption = serializers.CharField(
        required=False, allow_blank=True, max_length=300,
        help_text="Optional; without it the caption is made from the file name.",
    )
    tags = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="Optional tags, separated by commas."
    )
    folder_tags = serializers.BooleanField(
        required=False, default=False, help_text="Each folder name of `path` becomes a tag too."
    )

    def validate_tags(self, text: str) -> list[str]:
        return _tags_from_text(text)


class RefusalSerializer(serializers.Serializer):
    name = serializers.CharField()
    reason = serializers.CharField()


class ArchiveUploadSerializer(serializers.ModelSerializer):
    """Where an archive sent to the upload API stands; the counts grow while a worker expands it."""

    refusals = RefusalSerializer(many=True, read_only=True, help_text="The first 50 members refused, with the reason.")
    members_total = serializers.IntegerField(read_only=True, help_text="Known once a worker has opened the archive (0 before).")
    error = serializers.CharField(read_only=True, help_text="Why the whole archive failed; empty otherwise.")

    class Meta:
        model = ArchiveUpload
        fields = [
            "id", "name", "state", "members_total", "members_done", "added", "duplicates", "refused", "error",
            "refusals",
        ]
        read_only_fields = fields


class UploadAddedSerializer(serializers.Serializer):
    """The file was added."""

    status = serializers.ChoiceField(choices=["added"])
    name = serializers.CharField(help_text="The file's path, or its name.")
    image = ImageListItemSerializer(help_text="The new image.")


class UploadDuplicateSerializer(UploadAddedSerializer):
    """The same bytes are already in the gallery (the image there got the tags)."""

    status = serializers.ChoiceField(choices=["duplicate"])
    image = ImageListItemSerializer(help_text="The image already there.")


class UploadArchiveSerializer(serializers.Serializer):
    """A zip archive, kept for a worker to expand: follow it at /api/uploads/archives/{id}/."""

    status = serializers.ChoiceField(choices=["archive"])
    name = serializers.CharField(help_text="The archive's path, or its name.")
    archive = ArchiveUploadSerializer()
