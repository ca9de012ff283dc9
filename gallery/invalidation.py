"""Every change a public page shows, and the cached pages it drops: the one place that says so.

Pages (the gallery's, tag pages, image pages with their neighbour lists, the API's reads) are
kept whole for anonymous visitors (``pagecache``), and neighbour lists on their own
(``similarity.cache``), all under one generation. Each change below bumps it once its
transaction commits; a change no page shows (a near-duplicate flag, an original's download
name) is not listed. Global, not per page: a caption appears on every page that lists its
image, and a new vector can enter any image's list, so no smaller set is safe to keep; a bump
is one Redis ``INCR`` whatever is cached.

What ingestion does by the thousand (a new image, its embedding status, its vector, its
renditions) is marked ``ingest``: PAGE_CACHE_INGEST_STALE_SECONDS may delay those (pagecache.store).

| change                                   | heard through                                  |
|------------------------------------------|------------------------------------------------|
| an image added, its caption edited       | Image post_save                                |
| an image deleted                         | Image post_delete                              |
| tags added to or taken from images       | the tags' m2m_changed; ``images_tagged`` (bulk)|
| a tag renamed or deleted                 | Tag post_save, post_delete                     |
| renditions made or deleted               | Rendition post_save, post_delete               |
| an embedding's status (processing, ...)  | similarity.signals.embedding_status_changed    |
| a vector stored or replaced              | similarity.signals.vectors_stored              |
| the serving model switched               | similarity.signals.serving_model_switched      |
| a setting changed (tests and shells only) | django's setting_changed                      |
| visitors' choices re-rank an image's list | clicks.signals.evidence_changed: only the pages whose URL names that image (``pagecache.store.pages_drop``) |

Connected in ``GalleryConfig.ready()`` by ``receivers_connect``.
"""

from __future__ import annotations

from pagecache.store import generation_bump, generation_bump_now, pages_drop


def pages_changed(**kwargs) -> None:
    """An edit: every cached page and list goes when it commits."""
    generation_bump()


def pages_ingested(**kwargs) -> None:
    """Ingestion's changes: the same, unless PAGE_CACHE_INGEST_STALE_SECONDS bounds their staleness."""
    generation_bump(ingest=True)


def settings_changed(**kwargs) -> None:
    """Pages show settings (the demo banner, page sizes); only tests change them while running."""
    generation_bump_now()


def evidence_changed(sender, source_ids, **kwargs) -> None:
    """New evidence reorders only its sources' lists: their pages go, every other page stays
    kept (sent after the evidence commits)."""
    for source_id in source_ids:
        pages_drop(pk=source_id)


def image_saved(sender, instance, created, **kwargs) -> None:
    generation_bump(ingest=created)


def image_tags_changed(sender, action, **kwargs) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        generation_bump()


def images_tagged() -> None:
    """Tags added in bulk (``gallery.services.images_tag``: rows written without the m2m signal)."""
    generation_bump()


def receivers_connect() -> None:
    from django.core.signals import setting_changed
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from clicks import signals as clicks_signals
    from similarity import signals as similarity_signals

    from .models import Image, Rendition, Tag

    uid = "gallery.invalidation"
    post_save.connect(image_saved, sender=Image, dispatch_uid=f"{uid}.image_saved")
    post_delete.connect(pages_changed, sender=Image, dispatch_uid=f"{uid}.image_deleted")
    m2m_changed.connect(image_tags_changed, sender=Image.tags.through, dispatch_uid=f"{uid}.image_tags")
    post_save.connect(pages_changed, sender=Tag, dispatch_uid=f"{uid}.tag_saved")
    post_delete.connect(pages_changed, sender=Tag, dispatch_uid=f"{uid}.tag_deleted")
    post_save.connect(pages_ingested, sender=Rendition, dispatch_uid=f"{uid}.rendition_saved")
    post_delete.connect(pages_changed, sender=Rendition, dispatch_uid=f"{uid}.rendition_deleted")
    similarity_signals.embedding_status_changed.connect(pages_ingested, dispatch_uid=f"{uid}.status")
    similarity_signals.vectors_stored.connect(pages_ingested, dispatch_uid=f"{uid}.vectors")
    similarity_signals.serving_model_switched.connect(pages_changed, dispatch_uid=f"{uid}.serving_model")
    setting_changed.connect(settings_changed, dispatch_uid=f"{uid}.setting")
    clicks_signals.evidence_changed.connect(evidence_changed, dispatch_uid=f"{uid}.evidence")
