"""Whole pages are cached for anonymous visitors, and every change a page shows drops them.

Each kind of change below is made the way the site makes it (a service, the ORM as the admin
does, the worker's lifecycle calls), committed for real, and then every page it affects is
asked for again as a visitor would: the image's page, its neighbours' pages, gallery and tag
pages, and the JSON API. Before the change, the same pages are shown to come from the cache
(no SQL at all), so a test that passes is not passing because nothing was cached.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from clicks.evidence import evidence_refresh
from clicks.models import PairDay
from gallery.models import Image, Tag
from gallery.renditions import renditions_create
from gallery.services import image_update, images_tag
from pagecache import store
from similarity.lifecycle import images_mark_failed
from similarity.models import Embedding
from similarity.serving import serving_model_switch
from similarity.services import embeddings_store
from similarity.weights import model_identity
from tests.conftest import unit_vector

pytestmark = pytest.mark.usefixtures("transactional_db")

OTHER_MODEL = "resnet18/random-seed99"


@dataclass
class World:
    chosen: Image  # the image whose page and list are watched
    near: Image  # its nearest neighbour, tagged "harbour" like it
    far: Image  # a farther neighbour, untagged
    pending: Image  # not embedded yet


@pytest.fixture
def world(image_factory, settings) -> World:
    # Visitors' evidence may outweigh a large visual gap here: the worlds are tiny.
    settings.CLICKS_EVIDENCE_WEIGHT = 10
    chosen = image_factory(1, vector=unit_vector(1, 0, 0), caption="Quay at dawn")
    near = image_factory(2, vector=unit_vector(1, 0.3, 0), caption="Boats moored")
    far = image_factory(3, vector=unit_vector(0.2, 1, 0), caption="Green field")
    pending = image_factory(4, caption="Just uploaded")
    image_update(image=chosen, tag_names=["harbour"])
    image_update(image=near, tag_names=["harbour"])
    return World(chosen, near, far, pending)


# --- Reading pages as a visitor --------------------------------------------------------------


def page_url(world: World, page: str) -> str:
    image = {"chosen": world.chosen, "near": world.near, "far": world.far, "pending": world.pending}
    if page == "chosen's hybrid page":
        return reverse("gallery:image-detail", args=[world.chosen.pk]) + "?variant=hybrid"
    if page == "json similar chosen hybrid":
        return reverse("gallery:api-similar", args=[world.chosen.pk]) + "?variant=hybrid"
    if page == "gallery":
        return reverse("gallery:image-list")
    if page == "tag page":
        return reverse("gallery:image-list") + "?tag=harbour"
    if page.startswith("json similar "):
        return reverse("gallery:api-similar", args=[image[page.removeprefix("json similar ")].pk])
    if page == "json list":
        return reverse("gallery:api-image-list")
    if page.startswith("json "):
        return reverse("gallery:api-image-detail", args=[image[page.removeprefix("json ")].pk])
    return reverse("gallery:image-detail", args=[image[page.removesuffix("'s page")].pk])


def visit(url: str):
    return Client().get(url)


def listed_ids(html: str) -> list[int]:
    """The images a page's cards link to, in order (an image page: its similar images only)."""
    if 'class="grid similar"' in html:
        html = html.split('class="grid similar"', 1)[1]
    elif 'class="grid' in html:
        html = html.split('class="grid', 1)[1]
    else:
        return []
    # A similar list's links count the choice first (/go/<source>/<position>/<comparison>/<variant>/<id>/).
    ids = [int(found) for found in re.findall(r'<a href="/(?:images|go/\d+/\d+/\w+/\w+)/(\d+)/"', html)]
    return list(dict.fromkeys(ids))


def json_ids(body: dict) -> list[int]:
    if "similar" in body:
        return [item["id"] for item in body["similar"]]
    return [item["id"] for item in body["results"]]


def warm(world: World, pages: list[str]) -> None:
    """Ask for each page twice: the second answer must come from the cache without SQL."""
    for page in pages:
        url = page_url(world, page)
        assert visit(url).status_code == 200, url
        with CaptureQueriesContext(connection) as queries:
            response = visit(url)
        assert response.status_code == 200 and len(queries) == 0, f"{url} was not answered from the cache"


# --- The changes, and what each affected page must show next ---------------------------------


def caption_edited(world):
    image_update(image=world.near, caption="Lighthouse at noon")


def caption_shows(world, page, response):
    return "Lighthouse at noon" in response.content.decode()


def tag_added(world):
    image_update(image=world.far, tag_names=["harbour"])


def far_tagged(world, page, response):
    if page in ("tag page", "json list"):
        return world.far.pk in ids_of(response) if page == "tag page" else "harbour" in tags_in_list(response, world.far)
    return "harbour" in response.content.decode()


def tag_added_in_bulk(world):
    images_tag(image_ids=[world.far.pk], names=["harbour"])


def tag_removed(world):
    image_update(image=world.near, tag_names=[])


def near_untagged(world, page, response):
    if page == "tag page":
        return world.near.pk not in ids_of(response) and world.chosen.pk in ids_of(response)
    if page == "json near":
        return response.json()["tags"] == []
    return "?tag=harbour" not in response.content.decode().split('class="grid similar"')[0]


def tag_renamed(world):
    tag = Tag.objects.get(name="harbour")
    tag.name = "Port"
    tag.save()


def tag_shows_new_name(world, page, response):
    if page == "json near":
        return [tag["name"] for tag in response.json()["tags"]] == ["Port"]
    text = response.content.decode()  # the slug in its links stays: old links keep working
    return ">Port<" in text and ">harbour<" not in text and "tagged harbour" not in text


def tag_deleted(world):
    Tag.objects.get(name="harbour").delete()


def tag_gone(world, page, response):
    if page == "tag page":  # a tag that no longer exists
        return response.status_code == 404
    return "harbour" not in response.content.decode()


def embedding_failed(world):
    images_mark_failed(failures={world.pending.pk: "The stored file is missing."})


def failure_shows(world, page, response):
    if page == "json pending":
        return response.json()["embedding_status"] == "failed"
    return "could not be processed" in response.content.decode() and "The stored file is missing." in response.content.decode()


def renditions_appear(world):
    renditions_create(image=world.near)


def renditions_show(world, page, response):
    return "/renditions/" in response.content.decode() if page != "json near" else bool(response.json()["renditions"])


def image_deleted(world):
    pk = world.near.pk
    world.near.delete()
    world.near.pk = pk  # its page's address, to ask for it again


def near_gone(world, page, response):
    if page == "near's page":
        return response.status_code == 404
    return world.near.pk not in ids_of(response)


def vector_added(world):
    """An upload embedded by the worker: nearer to the chosen image than anything else."""
    newcomer = Image.objects.get(pk=world.pending.pk)
    embeddings_store(vectors_by_image={newcomer.pk: unit_vector(1, 0.05, 0)}, identity=model_identity())


def newcomer_first(world, page, response):
    return ids_of(response)[:1] == [world.pending.pk]


def vector_replaced(world):
    """The far image re-embedded (say, after a fix to its file): it is now the nearest."""
    embeddings_store(vectors_by_image={world.far.pk: unit_vector(1, 0, 0.01)}, identity=model_identity())


def far_first(world, page, response):
    return ids_of(response)[:2] == [world.far.pk, world.near.pk]


def serving_model_switched(world):
    """Another model's vectors, in which the far image is the chosen one's nearest."""
    vectors = {
        world.chosen.pk: unit_vector(0, 0, 1),
        world.near.pk: unit_vector(1, 0, 0),
        world.far.pk: unit_vector(0, 0.1, 1),
    }
    Embedding.objects.bulk_create(
        Embedding(image_id=pk, model_identity=OTHER_MODEL, vector=vector) for pk, vector in vectors.items()
    )
    serving_model_switch(identity=OTHER_MODEL, images_total=3)


def choices_rerank(world):
    """Visitors skip the nearest image and choose the farther one, day after day."""
    today = timezone.now().date()
    PairDay.objects.create(day=today, source=world.chosen, target=world.near, variant="visual", position=1,
                           impressions=200, choices=0)
    PairDay.objects.create(day=today, source=world.chosen, target=world.far, variant="visual", position=2,
                           impressions=200, choices=120)
    evidence_refresh()


def ids_of(response) -> list[int]:
    if response["Content-Type"].startswith("application/json"):
        return json_ids(response.json())
    return listed_ids(response.content.decode())


def tags_in_list(response, image) -> list[str]:
    (item,) = [item for item in response.json()["results"] if item["id"] == image.pk]
    return [tag["name"] for tag in item["tags"]]


ALL_PAGES = ["chosen's page", "near's page", "gallery", "tag page", "json similar chosen", "json list", "json near"]

CHANGES = {
    "caption edited": (caption_edited, caption_shows, ["chosen's page", "near's page", "gallery", "tag page", "json similar chosen", "json list", "json near"]),
    "tag added": (tag_added, far_tagged, ["far's page", "tag page", "json list"]),
    "tag added in bulk": (tag_added_in_bulk, far_tagged, ["far's page", "tag page", "json list"]),
    "tag removed": (tag_removed, near_untagged, ["near's page", "tag page", "json near"]),
    "tag renamed": (tag_renamed, tag_shows_new_name, ["chosen's page", "near's page", "json near"]),
    "tag deleted": (tag_deleted, tag_gone, ["chosen's page", "near's page", "tag page", "json near"]),
    "status changed": (embedding_failed, failure_shows, ["pending's page", "json pending"]),
    "renditions appear": (renditions_appear, renditions_show, ["chosen's page", "near's page", "gallery", "json near"]),
    "image deleted": (image_deleted, near_gone, ["chosen's page", "near's page", "gallery", "tag page", "json similar chosen", "json list"]),
    "vector added": (vector_added, newcomer_first, ["chosen's page", "json similar chosen"]),
    "vector replaced": (vector_replaced, far_first, ["chosen's page", "json similar chosen"]),
    "serving model switched": (serving_model_switched, far_first, ["chosen's page", "json similar chosen"]),
    "visitors' choices re-rank": (choices_rerank, far_first, ["chosen's hybrid page", "json similar chosen hybrid"]),
}


@pytest.mark.parametrize("kind", CHANGES)
def test_every_change_shows_on_the_next_request_of_every_affected_page(world, kind):
    change, shows, pages = CHANGES[kind]
    warm(world, pages)
    before = {page: visit(page_url(world, page)) for page in pages}
    assert not any(shows(world, page, response) for page, response in before.items() if response.status_code == 200)

    change(world)

    for page in pages:
        response = visit(page_url(world, page))
        assert response.status_code in (200, 404), page
        assert shows(world, page, response), f"{kind}: {page} still shows the page from before"


def test_visitors_choices_drop_only_the_pages_of_the_images_they_re_rank(world):
    warm(world, ["chosen's hybrid page", "near's page", "gallery"])
    choices_rerank(world)
    assert ids_of(visit(page_url(world, "chosen's hybrid page")))[:2] == [world.far.pk, world.near.pk]
    for page in ("near's page", "gallery"):  # still kept: no SQL on their first request after it
        with CaptureQueriesContext(connection) as queries:
            assert visit(page_url(world, page)).status_code == 200
        assert len(queries) == 0, page


def test_a_change_committed_later_drops_pages_cached_while_it_was_open(world):
    """A page another request caches from the old rows before the commit is not kept after it."""
    with transaction.atomic():
        image_update(image=world.near, caption="Lighthouse at noon")
        during = store.generation()
    assert store.generation() > during


def test_a_transaction_of_many_changes_bumps_once_on_commit(world, django_capture_on_commit_callbacks):
    with transaction.atomic(), django_capture_on_commit_callbacks() as callbacks:
        for seed, image in enumerate([world.chosen, world.near, world.far]):
            image_update(image=image, caption=f"Renamed {seed}")
    assert sum(store.is_bump(callback) for callback in callbacks) == 1


# --- Who gets cached pages, and what the browser is told -------------------------------------


def test_pages_carry_an_etag_and_answer_304_when_unchanged(world):
    url = page_url(world, "chosen's page")
    first = visit(url)
    assert first["Cache-Control"] == "public, max-age=60" and first["ETag"]
    with CaptureQueriesContext(connection) as queries:
        again = Client().get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b"" and len(queries) == 0
    assert again["ETag"] == first["ETag"] and again["Cache-Control"] == "public, max-age=60"
    several = Client().get(url, HTTP_IF_NONE_MATCH=f'"stale", {first["ETag"]}')
    assert several.status_code == 304
    image_update(image=world.chosen, caption="Quay at dusk")
    changed = Client().get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200 and "Quay at dusk" in changed.content.decode()
    assert changed["ETag"] != first["ETag"]


def test_head_is_answered_from_the_same_cache_without_a_body(world):
    url = page_url(world, "gallery")
    visit(url)
    with CaptureQueriesContext(connection) as queries:
        head = Client().head(url)
    assert head.status_code == 200 and head.content == b"" and len(queries) == 0


def test_a_signed_in_visitor_never_gets_or_leaves_a_cached_page(world, staff_client):
    url = page_url(world, "chosen's page")
    staff = staff_client.get(url)
    assert "private" in staff["Cache-Control"] and "no-cache" in staff["Cache-Control"]
    anonymous = visit(url)
    assert "csrfmiddlewaretoken" not in anonymous.content.decode()
    assert not anonymous.cookies
    with CaptureQueriesContext(connection) as queries:
        again = staff_client.get(url)
    assert len(queries) > 0 and again.status_code == 200  # computed for them, every time


def test_each_host_and_format_has_its_own_entry(world):
    url = page_url(world, "json similar chosen")
    json_response = Client().get(url, HTTP_ACCEPT="application/json")
    assert json_response["Content-Type"].startswith("application/json")
    json.loads(json_response.content)
    html_page = page_url(world, "chosen's page")
    here = Client().get(html_page, HTTP_HOST="testserver")
    assert 'href="http://testserver/' in here.content.decode()
    # Another allowed name for the site: its canonical links name that host, not the first one's.
    elsewhere = Client().get(html_page, HTTP_HOST="localhost")
    assert 'href="http://localhost/' in elsewhere.content.decode()


def test_pages_are_served_when_redis_is_down(world, settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"},
    }
    for page in ALL_PAGES:
        response = visit(page_url(world, page))
        assert response.status_code == 200, page
    image_update(image=world.near, caption="Still editable")  # a bump that cannot reach Redis fails nothing
    assert "Still editable" in visit(page_url(world, "near's page")).content.decode()


def test_ingest_changes_may_wait_the_staleness_bound_and_edits_never_do(world, settings, monkeypatch):
    settings.PAGE_CACHE_INGEST_STALE_SECONDS = 5
    clock = [1_000_000.0]
    monkeypatch.setattr(store, "_now", lambda: clock[0])
    url = page_url(world, "chosen's page")
    warm(world, ["chosen's page"])

    vector_added(world)  # ingestion: the cached page may stay up to 5 s
    assert world.pending.pk not in listed_ids(visit(url).content.decode())
    clock[0] += 5
    assert listed_ids(visit(url).content.decode())[:1] == [world.pending.pk]

    warm(world, ["chosen's page"])
    image_update(image=world.near, caption="Lighthouse at noon")  # an edit: at once
    assert "Lighthouse at noon" in visit(url).content.decode()
