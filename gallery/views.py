from django.conf import settings
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views.generic import DetailView, FormView, ListView
from django_ratelimit.core import _split_rate
from django_ratelimit.decorators import ratelimit

from clicks import recording
from clicks import selectors as clicks_selectors
from similarity import search

from . import selectors
from .forms import SearchForm, requested_diverse, requested_k, requested_variant
from .pagination import CountOncePaginator


class GalleryView(ListView):
    """The paginated gallery, newest first; ?tag= shows one tag's images."""

    template_name = "gallery/image_list.html"
    context_object_name = "images"
    paginator_class = CountOncePaginator

    def get_paginate_by(self, queryset):
        return settings.GALLERY_PAGE_SIZE

    def get_queryset(self):
        self.tag = selectors.tag_get(slug=self.request.GET.get("tag"))
        return selectors.image_list(tag=self.tag)

    def paginate_queryset(self, queryset, page_size):
        # get_page() clamps: a page past the end shows the last one, garbage shows the first.
        paginator = self.get_paginator(queryset, page_size, allow_empty_first_page=True)
        page = paginator.get_page(self.request.GET.get("page"))
        return paginator, page, page.object_list, page.has_other_pages()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        page = context["page_obj"]
        context["tag"] = self.tag
        context["tags"] = selectors.tags_in_use()
        context["page_numbers"] = page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
        return context


class ImageDetailView(DetailView):
    """One image and the images most similar to it: ?k=, ?tag= (only that tag's), ?diverse=1."""

    template_name = "gallery/image_detail.html"
    context_object_name = "image"

    def get_object(self, queryset=None):
        return selectors.image_get(image_id=self.kwargs["pk"])

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        k = requested_k(self.request.GET.get("k"))
        tag = selectors.tag_get(slug=self.request.GET.get("tag"))
        diverse = requested_diverse(self.request.GET.get("diverse"))
        variant = requested_variant(self.request.GET.get("variant"))
        similar = selectors.image_recommendations(image=self.object, k=k, tag=tag, diverse=diverse, variant=variant)
        context.update(
            k=k,
            k_choices=[3, 6, 12, 24, settings.RECOMMENDATIONS_K_MAX],
            tag=tag,
            diverse=diverse,
            variant=variant,
            # How the list was made, for the counts: a list asked for by name, or the comparison.
            comparison=clicks_selectors.comparison_of(variant=variant),
            has_embedding=self.object.has_embedding,
            similar_images=similar,
        )
        return context

    def render_to_response(self, context, **kwargs):
        response = super().render_to_response(context, **kwargs)
        if context["similar_images"]:
            # What the list showed, for clicks.middleware to count once per page served
            # (from the page cache too); it never leaves the site.
            response[recording.SHOWN_HEADER] = recording.shown_header_value(
                source_id=self.object.pk,
                shown=[(item.image.pk, item.variant) for item in context["similar_images"]],
                comparison=context["comparison"],
            )
        return response


def recommend_redirect(request):
    """The original app's /recommend?selectedImage=<file name>, kept working.

    A temporary redirect: which image a name means changes when another is uploaded under it.
    """
    image = selectors.image_get_by_original_name(original_name=request.GET.get("selectedImage", ""))
    return redirect("gallery:image-detail", pk=image.pk)


@method_decorator(ratelimit(key="ip", rate=lambda group, request: settings.SEARCH_RATE, method="POST", block=True), name="post")
class SearchView(FormView):
    """Search by example: the gallery images most similar to a visitor's own photo."""

    template_name = "gallery/search.html"
    form_class = SearchForm

    def form_valid(self, form):
        k = form.cleaned_data["k"] or settings.RECOMMENDATIONS_K
        try:
            similar = search.images_similar_to_picture(picture=form.cleaned_data["photo"], k=k)
        except search.SearchUnavailable as error:
            context = self.get_context_data(form=form, unavailable=str(error))
            return self.render_to_response(context, status=503)
        selectors.images_prefetch_renditions(images=[item.image for item in similar])
        return self.render_to_response(self.get_context_data(form=form, similar_images=similar, searched=True))


def search_retry_after_seconds() -> int:
    """How long a limited address waits at most: SEARCH_RATE's period ("10/m": 60 seconds).

    django-ratelimit counts in fixed windows of that period, so by then a new one has begun.
    """
    _, seconds = _split_rate(settings.SEARCH_RATE)  # the library's own reading of a rate
    return seconds


def rate_limited(request, exception):
    """django-ratelimit's answer: 429 with the site's own page, and when to come back."""
    retry_after = search_retry_after_seconds()
    response = render(request, "429.html", {"retry_after": retry_after}, status=429)
    response["Retry-After"] = str(retry_after)
    return response
