"""The JSON API for scripts and front ends (Django REST framework; schema by drf-spectacular).

Reads are public; a change needs what the admin would ask for the same change: a staff account
with the model permission (an edit: ``gallery.change_image``). Uploads, reads of an archive's
progress included, are the admin's add page over HTTP: staff with ``gallery.add_image``. Every error, whether a
view, the framework or Django itself answers it, is JSON in one shape:
``{"error": {"status": 404, "message": "...", "fields": {"k": "..."}}}``.

The views only parse and shape: the reads are the gallery's selectors and the similarity
engine's, the writes are ``services.image_update`` and the upload services.
"""

from django.conf import settings
from django.http import Http404
from django.urls import reverse
from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit
from django_ratelimit.exceptions import Ratelimited
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import NotFound, ParseError, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, AllowAny, DjangoModelPermissions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as framework_exception_handler

from imagerec.errors import json_error
from similarity import search

from . import selectors, services
from .pagination import CountOncePaginator
from .models import Image
from .serializers import (
    ArchiveUploadSerializer,
    ImageDetailSerializer,
    ImageListItemSerializer,
    ImageListQuery,
    ImagePageSerializer,
    ImageUpdateSerializer,
    SearchRequest,
    SearchResultSerializer,
    SimilarImagesSerializer,
    SimilarQuery,
    UploadAddedSerializer,
    UploadArchiveSerializer,
    UploadCheckRequest,
    UploadCheckResultSerializer,
    UploadDuplicateSerializer,
    UploadRequest,
)
from .views import search_retry_after_seconds

# --- Errors ------------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status, repeated.")
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.CharField(), help_text="For invalid input: each parameter's first problem."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


BAD_INPUT = {400: _error("Invalid parameters: `fields` names each one.")}
NOT_FOUND = {404: _error("No such image.")}
STAFF_ONLY = {403: _error("Not signed in as staff with the permission this change needs (as in the admin).")}


def _first_message(errors) -> str:
    """DRF's errors nest (lists, dicts for list items): the first message, whatever the depth."""
    if isinstance(errors, dict):
        return _first_message(next(iter(errors.values()), ""))
    if isinstance(errors, list):
        return _first_message(errors[0]) if errors else ""
    return str(errors)


def exception_handler(exc, context):
    """The framework's answer to an exception, in the site's error shape (headers kept)."""
    if isinstance(exc, Ratelimited):  # a PermissionDenied to the framework, but it means "later"
        seconds = search_retry_after_seconds()
        response = json_error(429, f"Too many requests from your address; try again in {seconds} seconds.")
        response["Retry-After"] = str(seconds)
        return response
    response = framework_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handler answers (JSON under /api/: imagerec.errors)
    fields = {}
    if isinstance(exc, ValidationError):
        if isinstance(response.data, dict):
            fields = {name: _first_message(errors) for name, errors in response.data.items()}
            message = fields.pop("non_field_errors", "Invalid parameters.")
        else:
            message = _first_message(response.data)
    else:
        message = _first_message(response.data.get("detail", response.data))
    response.data = {"error": {"status": response.status_code, "message": message, "fields": fields}}
    return response


# --- Access ------------------------------------------------------------------------------


class ReadOnlyOrStaffWithModelPermission(DjangoModelPermissions):
    """Anyone may read; any other method needs what the admin needs for the same change.

    That is a staff account (the admin lets no one else in) holding the model permission for
    the method on the view's queryset: POST adds, PUT and PATCH change, DELETE deletes.
    """

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_staff) and super().has_permission(request, view)


class ApiSchema(AutoSchema):
    def get_auth(self):
        # The permission class is ours, so the schema generator cannot tell that reads are public.
        auths = super().get_auth()
        return [*auths, {}] if self.method in SAFE_METHODS and {} not in auths else auths


class JSONBodyParser(JSONParser):
    """DRF's JSON parser, with every way a body can fail to parse answered as a 400.

    The decoder recurses once per nesting level, so a body of 100,000 opening brackets raises
    RecursionError, which DRF's parser lets through as a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except (RecursionError, ValueError) as error:
            message = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ParseError(f"JSON parse error - {message}") from None


class ApiView(APIView):
    """Every API view: JSON only, staff for writes, errors in the site's shape.

    Set here rather than in REST_FRAMEWORK's defaults, which the framework reads while its own
    modules load (a default naming this module would import it half-made).
    """

    renderer_classes = [JSONRenderer]
    parser_classes = [JSONBodyParser]
    # A staff member signed in to the admin (with its CSRF token), or a script with HTTP Basic.
    authentication_classes = [SessionAuthentication, BasicAuthentication]
    permission_classes = [ReadOnlyOrStaffWithModelPermission]
    # What a write is checked against: every view here shows or changes images. A view that
    # writes anything else names its own.
    queryset = Image.objects.all()
    schema = ApiSchema()

    def get_exception_handler(self):
        return exception_handler


def _image_or_404(pk: int):
    try:
        return selectors.image_get(image_id=pk)
    except Http404:
        raise NotFound(f"No image with id {pk}.") from None


def _valid(serializer_class, data):
    query = serializer_class(data=data)
    query.is_valid(raise_exception=True)
    return query.validated_data


# --- Images ------------------------------------------------------------------------------


class ImagePagination(PageNumberPagination):
    django_paginator_class = CountOncePaginator
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request):
        self.page_size = settings.GALLERY_PAGE_SIZE  # read per request, like the gallery page
        return super().get_page_size(request)


class ImageListView(ApiView):
    """The gallery's images, newest first, a page at a time; ?tag= keeps to one tag."""

    pagination_class = ImagePagination

    @extend_schema(
        operation_id="images_list",
        parameters=[ImageListQuery],
        responses={200: ImagePageSerializer, **BAD_INPUT, 404: _error("No such page.")},
    )
    def get(self, request):
        # A plain dict: a QueryDict would read a missing flag as false rather than absent.
        query = _valid(ImageListQuery, request.query_params.dict())
        images = selectors.image_list(tag=query.get("tag")).prefetch_related("tags")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(images, request, view=self)
        selectors.images_load_embedding_jobs(images=page)  # the statuses, in one query for the page
        return paginator.get_paginated_response(ImageListItemSerializer(page, many=True).data)


class ImageDetailView(ApiView):
    """One image: its renditions, size, tags and embedding status; staff who may change images edit it."""

    http_method_names = ["get", "patch", "head", "options"]

    @extend_schema(operation_id="images_retrieve", responses={200: ImageDetailSerializer, **NOT_FOUND})
    def get(self, request, pk: int):
        return Response(self._detail(pk))

    @extend_schema(
        operation_id="images_partial_update",
        description="Staff with the permission to change images (`gallery.change_image`), as in the admin. "
        "Changes the caption and/or replaces the tags (by name; new names make new tags).",
        request=ImageUpdateSerializer,
        responses={200: ImageDetailSerializer, **BAD_INPUT, **STAFF_ONLY, **NOT_FOUND},
    )
    def patch(self, request, pk: int):
        image = _image_or_404(pk)
        changes = _valid(ImageUpdateSerializer, request.data)
        services.image_update(image=image, caption=changes.get("caption"), tag_names=changes.get("tags"))
        return Response(self._detail(pk))

    def _detail(self, pk: int) -> dict:
        image = _image_or_404(pk)
        selectors.images_prefetch_renditions(images=[image])
        return ImageDetailSerializer(image).data


class SimilarImagesView(ApiView):
    """The image and the k images most similar to it, most similar first.

    A fixed number of queries whatever k is. An image without a vector yet has none.
    """

    @extend_schema(
        operation_id="images_similar",
        parameters=[SimilarQuery],
        responses={200: SimilarImagesSerializer, **BAD_INPUT, **NOT_FOUND},
    )
    def get(self, request, pk: int):
        query = _valid(SimilarQuery, request.query_params.dict())
        image = _image_or_404(pk)
        similar = selectors.image_recommendations(
            image=image, k=query.get("k"), tag=query.get("tag"), diverse=query.get("diverse"),
            variant=query.get("variant"),
        )
        return Response(SimilarImagesSerializer({"image": image, "similar": similar}).data)


@method_decorator(ratelimit(key="ip", rate=lambda group, request: settings.SEARCH_RATE, method="POST", block=True), name="post")
class SearchView(ApiView):
    """Search by example: the gallery images most similar to an uploaded photo, which is not kept."""

    # Public, and it changes nothing: no session, so no CSRF token to send. Limited per address.
    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="search_by_photo",
        request={"multipart/form-data": SearchRequest},
        parameters=[
            OpenApiParameter(
                "Retry-After", int, OpenApiParameter.HEADER, response=[429],
                description="Seconds until this address may search again.",
            )
        ],
        responses={
            200: SearchResultSerializer,
            **BAD_INPUT,
            415: _error("Not a multipart/form-data upload."),
            429: _error("Too many searches from this address (SEARCH_RATE)."),
            503: _error("No embedding worker answered in time: busy or not running."),
        },
    )
    def post(self, request):
        form = _valid(SearchRequest, request.data)
        k = form.get("k") or settings.RECOMMENDATIONS_K
        try:
            similar = search.images_similar_to_picture(picture=form["photo"], k=k, tag=form.get("tag"))
        except search.SearchUnavailable as error:
            return json_error(503, str(error))
        selectors.images_prefetch_renditions(images=[item.image for item in similar])
        return Response(SearchResultSerializer({"similar": similar}).data)


# --- Uploads (staff) -----------------------------------------------------------------------


class StaffWhoMayAddImages(DjangoModelPermissions):
    """What the admin's add page asks, whatever the method: a staff account with ``gallery.add_image``.

    Reads too: an archive's progress names the files it held.
    """

    perms_map = {
        method: ["%(app_label)s.add_%(model_name)s"]
        for method in ("GET", "OPTIONS", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    }

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff) and super().has_permission(request, view)


class UploadApiView(ApiView):
    permission_classes = [StaffWhoMayAddImages]
    schema = AutoSchema()  # no anonymous reads to document here


class UploadCheckView(UploadApiView):
    """Which of these files the gallery already holds, by the SHA-256 of their bytes: those
    need not be sent. Optional tags go to the images found, as a file sent again would get them."""

    @extend_schema(
        operation_id="uploads_check",
        request=UploadCheckRequest,
        responses={200: UploadCheckResultSerializer, **BAD_INPUT, **STAFF_ONLY},
    )
    def post(self, request):
        query = _valid(UploadCheckRequest, request.data)
        known = services.upload_check(hashes=query["sha256"], tag_names=query.get("tags", []))
        answer = {"known": [{"sha256": image.sha256, "image": image} for image in known]}
        return Response(UploadCheckResultSerializer(answer).data)


def _upload_refused(status: int, reason: str, fields: dict | None = None):
    """The error shape with the reason as the message: the page shows it beside the file."""
    return json_error(status, reason, {"file": reason} if fields is None else fields)


class UploadView(UploadApiView):
    """One file per request, judged as every other way in is (the admin form, import_images)."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="uploads_create",
        description="Staff who may add images (`gallery.add_image`), as in the admin. One file per request: "
        "an image is added (201) or found already in the gallery (200), or refused (400, `message` "
        "and `fields.file` say why; final, not worth sending again). A zip archive is kept and "
        "expanded by a worker (202): follow it at the `Location` given.",
        request={"multipart/form-data": UploadRequest},
        parameters=[
            OpenApiParameter(
                "Location", str, OpenApiParameter.HEADER, response=[202], description="The archive's progress."
            )
        ],
        responses={
            201: UploadAddedSerializer,
            200: UploadDuplicateSerializer,
            202: UploadArchiveSerializer,
            400: _error("Refused: `message` (and `fields.file`, or the field at fault) says why."),
            **STAFF_ONLY,
            413: _error("Larger than one file or one archive may be (UPLOAD_MAX_REQUEST_BYTES)."),
            415: _error("Not a multipart/form-data upload."),
            503: _error("A zip archive could not be queued for a worker; send it again."),
        },
    )
    def post(self, request):
        form = UploadRequest(data=request.data)
        if not form.is_valid():
            fields = {name: _first_message(errors) for name, errors in form.errors.items()}
            return _upload_refused(400, fields.get("file") or next(iter(fields.values())), fields)
        data = form.validated_data
        outcome = services.image_upload(
            upload=data["file"], path=data.get("path", ""), caption=data.get("caption", ""),
            tag_names=data.get("tags", []), folder_tags=data["folder_tags"], uploaded_by=request.user,
        )
        if outcome.status == "refused":
            if outcome.error == services.UNEXPECTED_ERROR:
                return _upload_refused(500, outcome.error)  # a bug, logged; worth sending again
            if outcome.error == services.ARCHIVE_NOT_QUEUED:
                return _upload_refused(503, outcome.error)
            return _upload_refused(400, outcome.error)
        if outcome.status == "archive":
            archive = outcome.queued_archive
            answer = UploadArchiveSerializer({"status": "archive", "name": outcome.name, "archive": archive}).data
            progress = reverse("gallery:api-upload-archive", args=[archive.pk])
            return Response(answer, status=202, headers={"Location": progress})
        image = outcome.image or outcome.duplicate_of
        selectors.images_prefetch_renditions(images=[image])
        answer = {"status": outcome.status, "name": outcome.name, "image": image}
        if outcome.status == "added":
            return Response(UploadAddedSerializer(answer).data, status=201)
        return Response(UploadDuplicateSerializer(answer).data)


class ArchiveUploadView(UploadApiView):
    """Where a zip archive sent to the upload API stands: queued, expanding, done or failed, with counts."""

    @extend_schema(
        operation_id="uploads_archive",
        responses={200: ArchiveUploadSerializer, **STAFF_ONLY, 404: _error("No such archive.")},
    )
    def get(self, request, pk: int):
        try:
            archive = selectors.archive_upload_get(archive_id=pk)
        except Http404:
            raise NotFound(f"No archive upload with id {pk}.") from None
        return Response(ArchiveUploadSerializer(archive).data)
