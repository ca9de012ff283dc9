"""manage.py import_images: a folder in, a summary out; running it again adds nothing."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gallery.models import Image
from tests.conftest import encode, photo_like
from tests.gallery.test_pipeline import broker_queue  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "to-import"
    (root / "trip" / "day-2").mkdir(parents=True)
    (root / "harbour_at-dawn.jpg").write_bytes(encode(photo_like(1, (64, 48))))
    (root / "market.png").write_bytes(encode(photo_like(2, (64, 48)), "PNG"))
    (root / "copy-of-market.png").write_bytes(encode(photo_like(2, (64, 48)), "PNG"))
    (root / "notes.txt").write_text("not a picture")
    (root / ".hidden.jpg").write_bytes(encode(photo_like(3, (64, 48))))
    (root / "trip" / "bridge.jpg").write_bytes(encode(photo_like(4, (64, 48))))
    (root / "trip" / "day-2" / "bridge.jpg").write_bytes(encode(photo_like(5, (64, 48))))
    return root


def run(*args) -> str:
    out = StringIO()
    call_command("import_images", *map(str, args), stdout=out, verbosity=0)
    return out.getvalue()


def test_import_twice_adds_once_and_says_what_happened(folder, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = run(folder)
    assert "Imported 2 new image(s); 1 already in the gallery; 1 refused." in first
    assert "refused (1): The file is not an image that can be read" in first and "notes.txt" in first
    assert set(Image.objects.values_list("original_name", "caption")) == {
        ("harbour_at-dawn.jpg", "harbour at dawn"),
        ("copy-of-market.png", "copy of market"),
    }
    assert all(image.embedding_status == Image.Status.PENDING for image in Image.objects.all())
    assert len(callbacks) >= 1  # embeddings and thumbnails queued once the rows are committed

    with django_capture_on_commit_callbacks() as callbacks:
        second = run(folder)
    assert "Imported 0 new image(s); 3 already in the gallery; 1 refused." in second
    assert Image.objects.count() == 2
    assert callbacks == []


def test_recursive_import_with_captions_from_a_csv(folder, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_text(
        "file name,caption\n"
        "harbour_at-dawn.jpg,The harbour before sunrise\n"
        "trip/day-2/bridge.jpg,\"The bridge, second day\"\n"
        "bridge.jpg,A bridge\n"
        "gone.jpg,Not in the folder\n",
        encoding="utf-8",
    )
    output = run(folder, "--recursive", "--captions", captions)
    assert "Imported 4 new image(s)" in output
    assert "1 caption row(s) named no file" in output
    assert dict(Image.objects.values_list("original_name", "caption").filter(original_name="harbour_at-dawn.jpg")) == {
        "harbour_at-dawn.jpg": "The harbour before sunrise"
    }
    assert set(Image.objects.filter(original_name="bridge.jpg").values_list("caption", flat=True)) == {
        "The bridge, second day",  # matched by its path
        "A bridge",  # matched by its name
    }


@pytest.fixture
def failing_for(monkeypatch):
    """failing_for(name, error): validating that file raises ``error``, as a bug of ours would."""
    from gallery import services

    inspect_image = services.inspect_image
    failures = {}

    def inspect(upload):
        if upload.name in failures:
            raise failures[upload.name]
        return inspect_image(upload)

    monkeypatch.setattr(services, "inspect_image", inspect)
    return failures.__setitem__


def test_a_file_that_breaks_is_refused_and_the_import_goes_on(folder, failing_for, caplog, tmp_path):
    failing_for("copy-of-market.png", RuntimeError("a bug met while validating"))
    captions = tmp_path / "captions.csv"
    captions.write_text("harbour_at-dawn.jpg,Dawn,harbour;boats\nmarket.png,Market,market\n", encoding="utf-8")

    output = run(folder, "--recursive", "--captions", captions)

    assert "Imported 4 new image(s); 0 already in the gallery; 2 refused." in output
    assert "refused (1): It could not be added: an unexpected error" in output and "copy-of-market.png" in output
    assert set(Image.objects.values_list("original_name", flat=True)) == {
        "harbour_at-dawn.jpg", "market.png", "bridge.jpg",
    }
    tags = {image.original_name: sorted(tag.name for tag in image.tags.all()) for image in Image.objects.all()}
    assert tags["harbour_at-dawn.jpg"] == ["boats", "harbour"] and tags["market.png"] == ["market"]
    logged = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info and "copy-of-market.png" in logged[0].getMessage()


@pytest.mark.django_db(transaction=True)
def test_an_interrupted_import_leaves_no_added_image_without_its_work(folder, failing_for, broker_queue):
    """Real commits: whatever stops the import, every image it added has its tasks on the broker."""
    from gallery import pipeline
    from similarity.pipeline import EMBED_TASK

    failing_for("notes.txt", KeyboardInterrupt())  # in name order: two added and a duplicate come first

    with pytest.raises(KeyboardInterrupt):
        run(folder)

    added = sorted(Image.objects.values_list("pk", flat=True))
    assert len(added) == 2
    assert sorted(broker_queue()) == sorted(
        (task, [[image_id]]) for task in (EMBED_TASK, pipeline.RENDITIONS_TASK) for image_id in added
    )


def test_files_over_the_size_limit_are_refused_without_reading_them(folder, settings):
    settings.IMAGE_MAX_UPLOAD_BYTES = 100
    output = run(folder)
    assert "Imported 0 new image(s)" in output
    assert "The file is too large" in output and "the limit is 100\xa0bytes" in output


def test_a_folder_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="is not a folder"):
        run(tmp_path / "nowhere")


def test_a_captions_file_with_one_column_is_an_error(folder, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_text("harbour_at-dawn.jpg\n")
    with pytest.raises(CommandError, match="row 1 needs two columns at least"):
        run(folder, "--captions", captions)
    assert Image.objects.count() == 0


def test_progress_bar_and_summary_on_the_terminal(folder, capsys):
    out = StringIO()
    call_command("import_images", str(folder), stdout=out)
    assert "Importing" in capsys.readouterr().err
    assert "Imported 2 new image(s)" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_damaged_files_are_reported_in_the_summary_and_nothing_spills_over_the_progress_bar(tmp_path):
    """libtiff writes to standard error and Pillow warns about bad EXIF: neither reaches the terminal."""
    import io as bytes_io
    import subprocess
    import sys

    from PIL import Image as PILImage

    from tests.conftest import PROJECT_DIR, worker_environment

    root = tmp_path / "damaged"
    root.mkdir()
    buffer = bytes_io.BytesIO()
    photo_like(6, (400, 300)).save(buffer, "TIFF", compression="tiff_lzw")
    garbled = bytearray(buffer.getvalue())
    for index in range(len(garbled) // 4, len(garbled) * 3 // 4, 7):
        garbled[index] = 0x55
    (root / "scan.tif").write_bytes(bytes(garbled))
    exif = PILImage.Exif()
    exif[0x010F] = "Camera maker"
    bad_exif = bytearray(encode(photo_like(7, (64, 48)), "JPEG", exif=exif.tobytes()))
    marker = bad_exif.index(b"Exif\x00\x00")
    bad_exif[marker + 20 : marker + 24] = b"\xff\xff\xff\x7f"  # an EXIF entry pointing far outside
    (root / "odd-exif.jpg").write_bytes(bytes(bad_exif))

    result = subprocess.run(
        [sys.executable, "manage.py", "import_images", str(root)],
        cwd=PROJECT_DIR, env=worker_environment(), capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "refused (1): The image is damaged or incomplete" in result.stdout and "scan.tif" in result.stdout
    # The progress bar is all that standard error carries: no libtiff or Pillow chatter.
    noise = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip() and "Importing" not in line]
    assert noise == []
