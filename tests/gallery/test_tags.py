"""Tags: set in the admin (one image or many) and by import, filter the gallery, narrow recommendations."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from gallery.models import Image, Tag
from gallery.services import images_tag
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
