import os

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from similarity.pipeline import embeddings_request
from similarity.selectors import embedding_status_expression
from similarity.serving import serving_identity
from similarity.weights import WeightsUnavailable, model_identity

from . import selectors, services
from .forms import ImageUploadForm
from .models import ArchiveUpload, Image

# The detected format's usual extension (Pillow's format names; others are lower-cased).
DOWNLOAD_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def _added_message(outcome) -> str:
    # The admin capitalises a message's first letter: start with a word of ours, so file
    # names are shown exactly as they were uploaded.
    return format_html("Added {} as image {}.", outcome.name, outcome.image.pk)


def _bulk_upload_settings() -> dict:
    """What static/js/admin-upload.js needs, given as data- attributes (the CSP allows no inline
    script): the API's upload endpoints, with 0 where the script puts an id, and their pace."""
    return {
        "upload_url": reverse("gallery:api-upload"),
        "check_url": reverse("gallery:api-upload-check"),
        "archive_url": reverse("gallery:api-upload-archive", args=[0]),
        "change_url": reverse("admin:gallery_image_change", args=[0]),
        "concurrency": settings.UPLOAD_CONCURRENCY,
        "check_max": settings.UPLOAD_CHECK_MAX,
        "retries": settings.UPLOAD_RETRIES,
    }


class TagActionForm(ActionForm):
    tags = forms.CharField(
        required=False, label="Tags", help_text="For “Add tags”: names separated by commas.",
        widget=forms.TextInput(attrs={"placeholder": "harbour, night"}),
    )


class ImageChangeList(ChangeList):
    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except OverflowError as error:
            # A date-hierarchy year or month no calendar has (?created_at__year=99999999999999999999)
            # overflows inside Django's admin; answer it like any other bad filter.
            raise IncorrectLookupParameters(error) from error

    def get_results(self, request):
        super().get_results(request)
        # Where each listed image's embedding stands, in one query for the whole page.
        selectors.images_load_embedding_jobs(images=self.result_list)


class EmbeddingStatusFilter(admin.SimpleListFilter):
    """By embedding status (similarity's rows, not a column of the image)."""

    title = "embedding status"
    parameter_name = "embedding_status"

    def lookups(self, request, model_admin):
        return Image.Status.choices

    def queryset(self, request, queryset):
        if self.value() in Image.Status.values:
            return queryset.in_status(self.value())
        return queryset


class PossibleDuplicateFilter(admin.SimpleListFilter):
    title = "possible duplicates"
    parameter_name = "possible_duplicate"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.possible_duplicates()
        if self.value() == "no":
            return queryset.filter(near_duplicate_of__isnull=True)
        return queryset


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "thumbnail", "caption", "original_name", "tag_names", "size_in_pixels", "status", "possible_duplicate",
        "created_at",
    ]
    list_display_links = ["thumbnail", "original_name"]
    list_editable = ["caption"]
    list_filter = [EmbeddingStatusFilter, PossibleDuplicateFilter, "tags"]
    search_fields = ["caption", "original_name"]
    list_per_page = 50
    date_hierarchy = "created_at"
    actions = ["add_tags", "recompute_embeddings", "retry_failed"]
    action_form = TagActionForm
    filter_horizontal = ["tags"]
    fields = [
        "preview", "caption", "original_name", "format", "size_in_pixels", "file_size", "sha256",
        "uploaded_by", "created_at", "embedding_status", "embedding_error", "embedding_attempts",
        "possible_duplicate", "tags",
    ]
    readonly_fields = [field for field in fields if field not in ("caption", "tags")]

    def get_changelist(self, request, **kwargs):
        return ImageChangeList

    def get_queryset(self, request):
        # Thumbnails and tags for a whole page of the list in one query each.
        # The status as SQL too, so the list can be sorted by it.
        queryset = super().get_queryset(request).with_renditions().prefetch_related("tags")
        return queryset.annotate(embedding_status_sort=embedding_status_expression())

    @admin.display(description="Tags")
    def tag_names(self, image: Image):
        return ", ".join(tag.name for tag in image.tags.all())

    @admin.display(description="Image")
    def thumbnail(self, image: Image):
        return render_to_string("admin/gallery/image/includes/thumbnail.html", {"image": image})

    @admin.display(description="Preview")
    def preview(self, image: Image):
        picture = render_to_string(
            "includes/picture.html", {"pic": image.picture, "alt": image.title, "sizes": "400px", "class": "preview"}
        )
        return format_html(
            '{}<p><a href="{}">Download the original file</a> ({}, {}; staff only: it keeps the camera\'s metadata)</p>',
            mark_safe(picture),  # rendered by the template engine, which escaped it
            reverse("admin:gallery_image_original", args=[image.pk]),
            image.format,
            filesizeformat(image.file_size),
        )

    @admin.display(description="Possible duplicate", ordering="near_duplicate_similarity")
    def possible_duplicate(self, image: Image):
        if image.near_duplicate_of_id is None:
            return ""
        return format_html(
            'possible duplicate of <a href="{}">{}</a> (similarity {})',
            reverse("admin:gallery_image_change", args=[image.near_duplicate_of_id]),
            image.near_duplicate_of_id,
            f"{image.near_duplicate_similarity or 0:.3f}",
        )

    @admin.display(description="Size in pixels")
    def size_in_pixels(self, image: Image):
        return f"{image.width} × {image.height}"

    @admin.display(description="Embedding", ordering="embedding_status_sort")
    def status(self, image: Image):
        if image.embedding_status == Image.Status.FAILED and image.embedding_error:
            return format_html("failed: {}", image.embedding_error)
        return image.get_embedding_status_display()

    # --- The original file, for staff only --------------------------------------------

    def get_urls(self):
        original = self.admin_site.admin_view(self.original_view)
        return [path("<int:pk>/original/", original, name="gallery_image_original"), *super().get_urls()]

    def original_view(self, request, pk):
        """The uploaded file as it came, camera metadata and all: a download, never shown inline."""
        image = get_object_or_404(Image, pk=pk)
        if not self.has_view_permission(request, image):
            raise Http404
        try:
            handle = image.file.open("rb")
        except FileNotFoundError:
            raise Http404("The stored file is missing.") from None
        # The name's extension is the detected format's, never the uploaded one's: a JPEG sent
        # as "photo.exe" downloads as "photo.jpg", so no program is started by opening it.
        extension = DOWNLOAD_EXTENSIONS.get(image.format, image.format.lower())
        filename = f"{os.path.splitext(image.original_name)[0] or 'image'}.{extension}"
        return FileResponse(
            handle, as_attachment=True, filename=filename, content_type=f"image/{image.format.lower()}"
        )

    # --- Adding: one form, one file or many ------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            return self.changeform_view(request, None, form_url, extra_context)
        form = ImageUploadForm(request.POST or None, request.FILES or None)
        context = {
            **self.admin_site.each_context(request),
            "title": "Add images",
            "form": form,
            "opts": self.model._meta,
            "has_view_permission": self.has_view_permission(request),
            "bulk_upload": _bulk_upload_settings(),
            **(extra_context or {}),
        }
        if request.method == "POST" and form.is_valid():
            outcomes = services.images_create(
                uploads=form.cleaned_data["files"],
                caption=form.cleaned_data["caption"],
                tag_names=services.tags_from_text(form.cleaned_data["tags"]),
                uploaded_by=request.user,
            )
            if all(outcome.status == "added" and not outcome.archive for outcome in outcomes):
                for outcome in outcomes:
                    self.message_user(request, _added_message(outcome), messages.SUCCESS)
                return redirect("admin:gallery_image_changelist")
            # Something to read (a duplicate, a refusal, an archive's contents), even when nothing
            # was added: one table lists every file with what became of it.
            return self._upload_result(request, outcomes, context)
        return TemplateResponse(request, "admin/gallery/image/upload.html", context)

    def _upload_result(self, request, outcomes, context):
        selectors.images_prefetch_renditions(
            images=[outcome.image or outcome.duplicate_of for outcome in outcomes]
        )
        counts = {status: 0 for status in ("added", "duplicate", "refused")}
        for outcome in outcomes:
            counts[outcome.status] += 1
        context = {**context, "title": "Upload results", "outcomes": outcomes, "counts": counts}
        return TemplateResponse(request, "admin/gallery/image/upload_result.html", context)

    # --- Embedding state --------------------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        try:
            identity = model_identity()
        except WeightsUnavailable as error:
            identity, counts = f"unavailable: {error}", None
        else:
            counts = selectors.embedding_status_counts(identity=identity)
        extra_context = {
            **(extra_context or {}),
            "embedding_counts": counts,
            "model_identity": identity,
            # During an upgrade the pages keep serving the previous model until the switch.
            "serving_identity": serving_identity(),
        }
        return super().changelist_view(request, extra_context=extra_context)

    @admin.action(description="Add tags to the selected images")
    def add_tags(self, request, queryset):
        names = services.tags_from_text(request.POST.get("tags", ""))
        if not names:
            self.message_user(request, "Name the tags to add in the Tags box first.", messages.WARNING)
            return
        too_long = services.tag_names_too_long(names)
        if too_long:
            self.message_user(request, f"No tags added: {too_long[0].lower()}{too_long[1:]}", messages.ERROR)
            return
        tags = services.images_tag(image_ids=queryset.values_list("pk", flat=True), names=names)
        self.message_user(
            request,
            f"Tagged {queryset.count()} image(s) with {', '.join(tag.name for tag in tags)}.",
            messages.SUCCESS,
        )

    @admin.action(description="Recompute embeddings of the selected images")
    def recompute_embeddings(self, request, queryset):
        count = embeddings_request(image_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} image(s) for a new embedding.", messages.SUCCESS)

    @admin.action(description="Retry the selected images that failed")
    def retry_failed(self, request, queryset):
        count = embeddings_request(image_ids=queryset.failed().values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} failed image(s) again.", messages.SUCCESS)


@admin.register(ArchiveUpload)
class ArchiveUploadAdmin(admin.ModelAdmin):
    """Zip archives sent to the upload API, and where each stands. Read-only: a worker writes them."""

    list_display = ["name", "state", "members", "added", "duplicates", "refused", "uploaded_by", "created_at", "finished_at"]
    list_filter = ["state"]
    search_fields = ["name"]
    list_per_page = 50
    fields = [
        "name", "state", "members", "added", "duplicates", "refused", "error", "refused_members", "caption",
        "tag_names", "folder_tags", "uploaded_by", "created_at", "updated_at", "finished_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # through the upload page, which stores the file and queues the worker

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a worker may be expanding it; its file goes once it is finished

    @admin.display(description="Members done")
    def members(self, archive: ArchiveUpload):
        return f"{archive.members_done} of {archive.members_total}" if archive.members_total else "not opened yet"

    @admin.display(description="Refused members (the first 50)")
    def refused_members(self, archive: ArchiveUpload):
        return format_html_join(mark_safe("<br>"), "{}: {}", ((item["name"], item["reason"]) for item in archive.refusals))
