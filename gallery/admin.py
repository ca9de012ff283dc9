from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from similarity.weights import WeightsUnavailable, model_identity

from . import pipeline, selectors, services
from .forms import ImageUploadForm
from .models import Image


def _outcome_message(outcome) -> str:
    if outcome.status == "added":
        return format_html("{}: added as image {}.", outcome.name, outcome.image.pk)
    if outcome.status == "duplicate":
        existing = outcome.duplicate_of
        url = reverse("admin:gallery_image_change", args=[existing.pk])
        return format_html(
            '{}: not added, the same file is already image <a href="{}">{} ({})</a>.',
            outcome.name,
            url,
            existing.pk,
            existing,
        )
    return format_html("{}: refused. {}", outcome.name, outcome.error)


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
        "thumbnail", "caption", "original_name", "size_in_pixels", "status", "possible_duplicate", "created_at",
    ]
    list_display_links = ["thumbnail", "original_name"]
    list_editable = ["caption"]
    list_filter = ["embedding_status", PossibleDuplicateFilter]
    search_fields = ["caption", "original_name"]
    list_per_page = 50
    date_hierarchy = "created_at"
    actions = ["recompute_embeddings", "retry_failed"]
    fields = [
        "preview", "caption", "original_name", "format", "size_in_pixels", "file_size", "sha256",
        "uploaded_by", "created_at", "embedding_status", "embedding_error", "embedding_attempts",
        "possible_duplicate",
    ]
    readonly_fields = [field for field in fields if field != "caption"]

    def get_queryset(self, request):
        # Thumbnails for a whole page of the list in one query.
        return super().get_queryset(request).with_renditions()

    @admin.display(description="Image")
    def thumbnail(self, image: Image):
        thumb = image.thumbnail
        return format_html(
            '<img src="{}" alt="" width="80" height="{}" style="object-fit:cover" loading="lazy">',
            thumb.src,
            max(1, round(80 * thumb.height / max(thumb.width, 1))),
        )

    @admin.display(description="Preview")
    def preview(self, image: Image):
        picture = image.picture
        return format_html(
            '<img src="{}" srcset="{}" sizes="400px" alt="{}" width="{}" height="{}" '
            'style="max-width:400px;height:auto">',
            picture.src,
            picture.srcset or picture.src,
            image,
            picture.width,
            picture.height,
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

    @admin.display(description="Embedding", ordering="embedding_status")
    def status(self, image: Image):
        if image.embedding_status == Image.Status.FAILED and image.embedding_error:
            return format_html("failed: {}", image.embedding_error)
        return image.get_embedding_status_display()

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
            **(extra_context or {}),
        }
        if request.method == "POST" and form.is_valid():
            outcomes = services.images_create(
                uploads=form.cleaned_data["files"],
                caption=form.cleaned_data["caption"],
                uploaded_by=request.user,
            )
            added = [outcome for outcome in outcomes if outcome.status == "added"]
            if added and (len(added) < len(outcomes) or any(outcome.archive for outcome in outcomes)):
                # Something to read (a file not added, an archive's contents): one page lists all.
                return self._upload_result(request, outcomes, context)
            if added:
                for outcome in outcomes:
                    self.message_user(request, _outcome_message(outcome), messages.SUCCESS)
                return redirect("admin:gallery_image_changelist")
            # Nothing was stored: say why, on the form, for every file.
            for outcome in outcomes:
                form.add_error("files", _outcome_message(outcome))
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
        extra_context = {**(extra_context or {}), "embedding_counts": counts, "model_identity": identity}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.action(description="Recompute embeddings of the selected images")
    def recompute_embeddings(self, request, queryset):
        count = pipeline.images_embedding_requeue(image_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} image(s) for a new embedding.", messages.SUCCESS)

    @admin.action(description="Retry the selected images that failed")
    def retry_failed(self, request, queryset):
        count = pipeline.images_embedding_requeue(image_ids=queryset.failed().values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} failed image(s) again.", messages.SUCCESS)
