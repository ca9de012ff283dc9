"""A visitor follows a link from a similar-image list: counted, then sent on to the image."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_safe
from django_ratelimit.core import is_ratelimited

from .recording import (
    COMPARISON_CODES,
    LARGEST_ID,
    VARIANT_CODES,
    choice_event,
    event_record,
    events_lost,
    redis_errors,
    request_may_be_counted,
)


def choice_may_be_counted(request, *, source_id: int, target_id: int) -> bool:
    """Within the client's rates: CLICKS_RATE overall, CLICKS_PAIR_RATE for this pair.

    django-ratelimit keeps each count in Redis under a hash of the client's address for the
    rate's period only. Both rates are charged on every counted attempt: a client repeating one
    link spends its overall allowance too.
    """
    overall = is_ratelimited(
        request, group="clicks.choice", key="ip", rate=settings.CLICKS_RATE, method="GET", increment=True
    )
    pair = is_ratelimited(
        request,
        group=f"clicks.choice:{source_id}:{target_id}",
        key="ip",
        rate=settings.CLICKS_PAIR_RATE,
        method="GET",
        increment=True,
    )
    return not overall and not pair


@require_safe
def choice(request, source: int, position: int, variant: str, target: int, comparison: str = "single"):
    """``/go/<source>/<position>/<comparison>/<variant>/<target>/``: the link at ``position`` of
    ``source``'s list, made by ``comparison`` ("interleaved", "ab" or "single"; "single" when the
    link leaves it out), put there by ``variant``. Always redirects to ``target``'s page (a 404
    for a link no list could hold); counts the choice when a visitor's browser followed it
    within the rates. Works without JavaScript: the link itself carries the signal."""
    if (
        variant not in VARIANT_CODES
        or comparison not in COMPARISON_CODES
        or not 1 <= position <= settings.RECOMMENDATIONS_K_MAX
        or not 0 < source <= LARGEST_ID
        or not 0 < target <= LARGEST_ID
        or source == target
    ):
        raise Http404("No list holds this link.")
    if settings.CLICKS_RECORDING and request_may_be_counted(request):
        try:
            counted = choice_may_be_counted(request, source_id=source, target_id=target)
        except redis_errors():
            events_lost().labels(kind="choice").inc()  # the rates live in Redis too
        else:
            if counted:
                event_record(
                    choice_event(
                        source_id=source, position=position, variant=variant, target_id=target, comparison=comparison
                    ),
                    kind="choice",
                )
    response = HttpResponseRedirect(reverse("gallery:image-detail", args=[target]))
    # Each click must reach the site to be counted; and the address is no page of its own.
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex"
    return response
