"""Missing weights are reported plainly and never cost an image its place in the queue."""

import io

import pytest
from django.core.management import call_command

from gallery.models import Image
from similarity.tasks import images_embed
from tests.conftest import WorkerProcess, worker_environment


def test_manage_py_check_warns_about_a_missing_weights_file(settings, tmp_path):
    settings.EMBEDDING_WEIGHTS = str(tmp_path / "missing.pth")
    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "similarity.W001" in out.getvalue()
    assert str(tmp_path / "missing.pth") in out.getvalue()


@pytest.mark.django_db
def test_a_task_that_cannot_load_the_weights_leaves_its_images_pending(image_factory, settings, tmp_path):
    image = image_factory(1)
    settings.EMBEDDING_WEIGHTS = str(tmp_path / "missing.pth")
    outcome = images_embed.run([image.pk])
    image.refresh_from_db()
    assert outcome == {"pending": [image.pk]}
    assert image.embedding_status == Image.Status.PENDING
    assert image.embedding_error == ""


@pytest.mark.end_to_end
def test_a_worker_without_its_weights_refuses_to_start_and_says_what_to_do(transactional_db, tmp_path):
    missing = tmp_path / "resnet18.pth"
    # Test settings always use random weights; the local ones honour EMBEDDING_WEIGHTS.
    worker = WorkerProcess(
        worker_environment(DJANGO_SETTINGS_MODULE="imagerec.settings.local", EMBEDDING_WEIGHTS=str(missing))
    )
    with pytest.raises(RuntimeError, match="exited early") as error:
        worker.start(tmp_path / "workers")
    message = str(error.value)
    assert "The worker cannot start" in message
    assert f"EMBEDDING_WEIGHTS names a weights file that does not exist: {missing}" in message
    assert worker.process.returncode != 0
