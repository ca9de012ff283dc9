from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from similarity.identity import WeightsUnavailable, model_identity
from similarity.selectors import embedding_status_counts
from similarity.services import embeddings_enqueue, images_mark_pending

from . import services
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


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "caption", "original_name", "size_in_pixels", "status", "created_at"]
    list_display_links = ["thumbnail", "original_name"]
    list_editable = ["caption"]
    list_filter = ["embedding_status"]
    search_fields = ["caption", "original_name"]
    list_per_page = 50
    date_hierarchy = "created_at"
    actions = ["recompute_embeddings", "retry_failed"]
    fields = [
        "preview", "caption", "original_name", "format", "size_in_pixels", "file_size", "sha256",
        "uploaded_by", "created_at", "embedding_status", "embedding_error", "embedding_attempts",
    ]
    readonly_fields = [field for field in fields if field != "caption"]

    @admin.display(description="Image")
    def thumbnail(self, image: Image):
        return format_html(
            '<img src="{}" alt="" width="80" height="{}" style="object-fit:cover" loading="lazy">',
            image.file.url,
            max(1, round(80 * image.height / max(image.width, 1))),
        )

    @admin.display(description="Preview")
    def preview(self, image: Image):
        return format_html('<img src="{}" alt="{}" style="max-width:400px;height:auto">', image.file.url, image)

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
        if request.method == "POST" and form.is_valid():
            outcomes = services.images_create(
                uploads=form.cleaned_data["files"],
                caption=form.cleaned_data["caption"],
                uploaded_by=request.user,
            )
            if any(outcome.status == "added" for outcome in outcomes):
                for outcome in outcomes:
                    level = messages.SUCCESS if outcome.status == "added" else messages.WARNING
                    self.message_user(request, _outcome_message(outcome), level)
                return redirect("admin:gallery_image_changelist")
            # Nothing was stored: say why, on the form, for every file.
            for outcome in outcomes:
                form.add_error("files", _outcome_message(outcome))
        context = {
            **self.admin_site.each_context(request),
            "title": "Add images",
            "form": form,
            "opts": self.model._meta,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/gallery/image/upload.html", context)

    # --- Embedding state --------------------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        try:
            identity = model_identity()
        except WeightsUnavailable as error:
            identity, counts = f"unavailable: {error}", None
        else:
            counts = embedding_status_counts(identity=identity)
        extra_context = {**(extra_context or {}), "embedding_counts": counts, "model_identity": identity}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.action(description="Recompute embeddings of the selected images")
    def recompute_embeddings(self, request, queryset):
        image_ids = list(queryset.values_list("pk", flat=True))
        images_mark_pending(images=Image.objects.filter(pk__in=image_ids))
        embeddings_enqueue(image_ids=image_ids)
        self.message_user(request, f"Queued {len(image_ids)} image(s) for a new embedding.", messages.SUCCESS)

    @admin.action(description="Retry the selected images that failed")
    def retry_failed(self, request, queryset):
        image_ids = list(queryset.failed().values_list("pk", flat=True))
        images_mark_pending(images=Image.objects.filter(pk__in=image_ids))
        embeddings_enqueue(image_ids=image_ids)
        self.message_user(request, f"Queued {len(image_ids)} failed image(s) again.", messages.SUCCESS)
