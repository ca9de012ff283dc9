"""Tags: set in the admin (one image or many) and by import, filter the gallery, narrow recommendations."""

import csv
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.validators import validate_unicode_slug
from django.db import connection
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gallery.models import Image, Tag
from gallery.services import images_tag, tags_get_or_create
from tests.conftest import encode, photo_like, unit_vector

pytestmark = pytest.mark.django_db
LIST_URL = reverse("admin:gallery_image_changelist")


def test_bulk_tagging_in_the_admin_adds_to_each_selected_image(staff_client, image_factory):
    first, second, other = image_factory(1), image_factory(2), image_factory(3)
    images_tag(image_ids=[first.pk], names=["Harbour"])

    response = staff_client.post(
        LIST_URL,
        {"action": "add_tags", "_selected_action": [first.pk, second.pk], "tags": "harbour, Night boats"},
        follow=True,
    )

    assert "Tagged 2 image(s) with Harbour, Night boats." in response.content.decode()
    assert sorted(first.tags.values_list("name", flat=True)) == ["Harbour", "Night boats"]
    assert sorted(second.tags.values_list("name", flat=True)) == ["Harbour", "Night boats"]
    assert not other.tags.exists()
    assert Tag.objects.count() == 2  # "harbour" is the existing "Harbour"
    filtered = staff_client.get(LIST_URL + f"?tags__id__exact={Tag.objects.get(name='Night boats').pk}")
    assert set(filtered.context["cl"].result_list) == {first, second}


def test_one_image_is_tagged_on_its_change_page(staff_client, image_factory):
    image = image_factory(1, caption="Quay")
    night = Tag.objects.create(name="night", slug="night")
    url = reverse("admin:gallery_image_change", args=[image.pk])
    response = staff_client.post(url, {"caption": "Quay", "tags": [night.pk]})
    assert response.status_code == 302
    assert list(image.tags.all()) == [night]


def test_an_upload_can_tag_all_its_images(staff_client, make_upload):
    staff_client.post(reverse("admin:gallery_image_add"), {"files": [make_upload(1), make_upload(2)], "tags": "walk"})
    assert set(Image.objects.filter(tags__name="walk").values_list("original_name", flat=True)) == {
        "photo-1.jpg",
        "photo-2.jpg",
    }


def test_import_takes_tags_from_the_captions_file_and_adds_them_on_a_second_run(tmp_path):
    (tmp_path / "a.jpg").write_bytes(encode(photo_like(1, (64, 48))))
    (tmp_path / "b.jpg").write_bytes(encode(photo_like(2, (64, 48))))
    captions = tmp_path / "captions.csv"
    captions.write_text('file,caption,tags\na.jpg,The quay,harbour;night\nb.jpg,A boat,"harbour, boats"\n')

    call_command("import_images", str(tmp_path), "--captions", str(captions), stdout=StringIO(), verbosity=0)

    tags = {image.original_name: sorted(image.tags.values_list("name", flat=True)) for image in Image.objects.all()}
    assert tags == {"a.jpg": ["harbour", "night"], "b.jpg": ["boats", "harbour"]}

    captions.write_text("a.jpg,The quay,sunset\n")
    call_command("import_images", str(tmp_path), "--captions", str(captions), stdout=StringIO(), verbosity=0)
    assert sorted(Image.objects.get(original_name="a.jpg").tags.values_list("name", flat=True)) == [
        "harbour", "night", "sunset",
    ]


def test_the_gallery_filters_by_tag_and_lists_the_tags(client, image_factory):
    boats = [image_factory(seed) for seed in range(3)]
    image_factory(9)
    images_tag(image_ids=[image.pk for image in boats], names=["boats"])

    everything = client.get("/")
    assert len(everything.context["images"]) == 4
    assert 'href="?tag=boats"' in everything.content.decode()

    page = client.get("/?tag=boats")
    assert set(page.context["images"]) == set(boats)
    assert "Images tagged “boats”" in page.content.decode()
    assert client.get("/?tag=no-such-tag").status_code == 404


def test_recommendations_can_keep_to_the_images_own_tag(client, image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0))
    nearest_untagged = image_factory(2, vector=unit_vector(1, 0.05))
    tagged = [image_factory(seed, vector=unit_vector(1, seed / 10)) for seed in (3, 4)]
    images_tag(image_ids=[chosen.pk, *(image.pk for image in tagged)], names=["boats"])

    plain = client.get(reverse("gallery:image-detail", args=[chosen.pk]))
    assert plain.context["similar_images"][0].image == nearest_untagged

    within = client.get(reverse("gallery:image-detail", args=[chosen.pk]) + "?tag=boats")
    assert [item.image for item in within.context["similar_images"]] == tagged
    assert 'value="boats" selected' in within.content.decode()


# --- Any name, through every path that makes tags -----------------------------------------

# Names that grow when slugify normalises them (NFKC): Latin and Arabic ligatures, a title-case
# digraph; marks that combine with the letter before them; names with no letter or digit.
LIGATURES = "ﬀﬁﬂﬃﬄﬅﬆ" + "ﷺﷻ﷽" + "ǅǈ"
COMBINING_MARKS = "\u0301\u0308\u0327\u20dd"
PUNCTUATION = "%&-_.!?*()[]{}'\"/\\#@ "
GROWING = ["ﬃ" * 30, "ﷺ" * 60, "﷽" * 60]

any_name = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=LIGATURES + COMBINING_MARKS + "aA1 ", min_size=1, max_size=70),
    st.text(alphabet=PUNCTUATION, min_size=1, max_size=8),
    st.sampled_from([*GROWING, "%%%", "&&&", "Harbour", "harbour", "tag-1"]),
)
# Bounded: each path runs in a few seconds, and the same examples every run.
FEW = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def upper(names: list[str]) -> list[str]:
    """The names as the database compares them when it matches a tag whatever its case."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT UPPER(name) FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i) ORDER BY i", [names])
        return [row[0] for row in cursor.fetchall()]


def assert_every_tag_is_distinct():
    tags = list(Tag.objects.all())
    assert len(set(upper([tag.name for tag in tags]))) == len(tags), "two tags whose names differ only in case"
    for tag in tags:
        assert 0 < len(tag.slug) <= Tag._meta.get_field("slug").max_length
        validate_unicode_slug(tag.slug)
    # Every slug finds its own tag: the gallery's ?tag= filter reaches each one.
    assert {tag.slug for tag in tags} == {tag.slug for tag in Tag.objects.filter(slug__in=[t.slug for t in tags])}
    assert len({tag.slug for tag in tags}) == len(tags)


def assert_names_map_to_tags(names: list[str], tag_of: dict[str, Tag]):
    """Each name has its tag (same name, whatever the case); two names, one tag only when equal."""
    stored = {name: tag.name for name, tag in tag_of.items()}
    assert upper(list(stored)) == upper(list(stored.values()))
    keys = dict(zip(names, upper(names), strict=True))
    for first in names:
        for second in names:
            assert (tag_of[first].pk == tag_of[second].pk) == (keys[first] == keys[second]), (first, second)


def plain(name: str) -> bool:
    """A name stored exactly as given: no spaces to trim, nothing PostgreSQL text cannot hold
    (NUL, a lone surrogate), not over the length."""
    storable = not any(character == "\x00" or "\ud800" <= character <= "\udfff" for character in name)
    return bool(name) and name == name.strip() and storable and len(name) <= 60


# Lone surrogates: a JSON string can carry them ("\ud800"), though no UTF-8 form or file can.
with_surrogates = st.text(st.characters(categories=["Cs", "Ll", "Zs"]), min_size=1, max_size=8)


@FEW
@given(names=st.lists(any_name | with_surrogates, max_size=6))
def test_the_service_gives_every_distinct_name_its_own_tag_and_slug(db, names):
    together = tags_get_or_create(names=names)  # never a DataError, whatever the names

    one_by_one = {name: tags_get_or_create(names=[name]) for name in names}
    assert together == list({tag.pk: tag for tags in one_by_one.values() for tag in tags}.values())
    kept = [name for name in names if plain(name)]
    assert_names_map_to_tags(kept, {name: one_by_one[name][0] for name in kept})
    assert_every_tag_is_distinct()


@pytest.mark.parametrize("name", [*GROWING, "  spaced  ", "x" * 200, "nul\x00inside", "lone\ud800surrogate"])
def test_a_name_that_cannot_be_stored_as_given_is_made_to_fit(db, name):
    (tag,) = tags_get_or_create(names=[name])
    assert len(tag.name) <= 60 and len(tag.slug) <= 60 and "\x00" not in tag.name
    assert tags_get_or_create(names=[name]) == [tag]  # and found again the next time


def test_names_without_letters_or_digits_never_share_a_tag(db):
    ampersands = Tag.objects.create(name="existing", slug="tag-8")
    tags = tags_get_or_create(names=["%%%", "&&&", "-", "tag 8", "Tag-8"])
    assert len({tag.pk for tag in tags}) == 5 and ampersands not in tags
    assert len({tag.slug for tag in Tag.objects.all()}) == 6


@pytest.fixture
def tagged_image(image_factory):
    return image_factory(1)


@FEW
@given(names=st.lists(any_name, max_size=5))
def test_the_api_accepts_a_name_with_its_own_tag_or_refuses_it_with_a_400(staff_client, tagged_image, names):
    before = list(tagged_image.tags.all())
    response = staff_client.patch(
        reverse("gallery:api-image-detail", args=[tagged_image.pk]), {"tags": names}, content_type="application/json"
    )
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert set(response.json()["error"]["fields"]) == {"tags"}
        assert list(tagged_image.tags.all()) == before
        return
    given_names = [name.strip() for name in names]
    assert all(plain(name) for name in given_names)  # the others were refused
    tags = {tag.name: tag for tag in tagged_image.tags.all()}
    assert sorted(tag["slug"] for tag in response.json()["tags"]) == sorted(tag.slug for tag in tags.values())
    tag_of = {name: next(tag for tag in tags.values() if upper([tag.name]) == upper([name])) for name in given_names}
    assert_names_map_to_tags(given_names, tag_of)
    assert_every_tag_is_distinct()


@pytest.mark.parametrize("names", [GROWING, ["%%%", "&&&"]])
def test_the_api_tags_with_names_that_grow_or_have_no_letters(staff_client, tagged_image, names):
    response = staff_client.patch(
        reverse("gallery:api-image-detail", args=[tagged_image.pk]), {"tags": names}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert sorted(tag["name"] for tag in response.json()["tags"]) == sorted(names)
    assert len({tag["slug"] for tag in response.json()["tags"]}) == len(names)


# Commas and semicolons separate names in the admin's box and the import's CSV.
name_in_a_list = any_name.map(lambda name: name.replace(",", " ").replace(";", " ").replace("\x00", ""))


@FEW
@given(names=st.lists(name_in_a_list, min_size=1, max_size=4))
def test_the_admin_action_tags_with_any_name_or_says_which_is_too_long(staff_client, tagged_image, names):
    before = list(tagged_image.tags.all())
    response = staff_client.post(
        LIST_URL, {"action": "add_tags", "_selected_action": [tagged_image.pk], "tags": ", ".join(names)}, follow=True
    )
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    given_names = [name.strip() for name in names if name.strip()]
    if any(len(name) > 60 for name in given_names):
        assert any("at most 60 characters" in message for message in messages), messages
        assert list(tagged_image.tags.all()) == before
        return
    if not given_names:
        assert any("Name the tags" in message for message in messages), messages
        return
    tags = list(tagged_image.tags.all())
    tag_of = {name: next(tag for tag in tags if upper([tag.name]) == upper([name])) for name in given_names}
    assert_names_map_to_tags(given_names, tag_of)
    assert_every_tag_is_distinct()


@pytest.mark.parametrize("names", [GROWING, ["%%%", "&&&"]])
def test_the_admin_action_tags_with_names_that_grow_or_have_no_letters(staff_client, tagged_image, names):
    response = staff_client.post(
        LIST_URL, {"action": "add_tags", "_selected_action": [tagged_image.pk], "tags": ", ".join(names)}, follow=True
    )
    assert "Tagged 1 image(s)" in response.content.decode()
    assert sorted(tagged_image.tags.values_list("name", flat=True)) == sorted(names)


@FEW
@given(names=st.lists(name_in_a_list.filter(lambda name: "\x00" not in name), min_size=1, max_size=4))
def test_the_import_tags_with_any_name_from_its_csv(db, tmp_path_factory, names):
    folder = tmp_path_factory.mktemp("import")
    (folder / "a.jpg").write_bytes(encode(photo_like(1, (64, 48))))
    captions = folder / "captions.csv"
    with captions.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerow(["a.jpg", "A caption", ";".join(names)])

    call_command("import_images", str(folder), "--captions", str(captions), stdout=StringIO(), verbosity=0)

    image = Image.objects.get(original_name="a.jpg")  # the same image each time: its tags grow
    tags = list(image.tags.all())
    given_names = [name.strip()[:60].rstrip() for name in names if name.strip()]
    tag_of = {name: next(tag for tag in tags if upper([tag.name]) == upper([name])) for name in given_names}
    assert_names_map_to_tags(given_names, tag_of)
    assert_every_tag_is_distinct()
