"""Files in, vectors out: batches through the network, with failures kept to their own file."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.files.storage import FileSystemStorage
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from gallery.validation import picture_validate
from imaging import load_rgb
from similarity import compute
from similarity.compute import embedding_of_picture, embeddings_compute, file_bytes
from similarity.encoders.registry import get_encoder
from similarity.preprocessing import PIXELS_SHAPE
from similarity.search import query_pixels
from tests.conftest import encode, photo_like, upload
from tests.picture_formats import accepted_files


def sources_of(files: dict[int, bytes | None], tmp_path: Path):
    """Sources as the worker gives them: a key and a function that opens the file."""
    sources = []
    for key, content in files.items():
        path = tmp_path / f"{key}.jpg"
        if content is not None:
            path.write_bytes(content)
        sources.append((key, lambda path=path: path.open("rb")))
    return sources


def test_batches_are_yielded_one_by_one_and_a_bad_file_fails_alone(tmp_path):
    pictures = {key: encode(photo_like(key, (400, 300))) for key in range(5)}
    files = {**pictures, 10: b"not a picture", 11: None}  # 11: the file is gone

    batches = list(embeddings_compute(sources=sources_of(files, tmp_path), batch_size=3))

    assert [sorted(batch.vectors) + sorted(batch.failures) for batch in batches] == [[0, 1, 2], [3, 4, 10], [11]]
    failures = {key: reason for batch in batches for key, reason in batch.failures.items()}
    assert failures[11] == "The stored file is missing."
    assert failures[10].startswith("The image cannot be decoded")
    assert all(batch.forward > 0 for batch in batches if batch.vectors)

    # Each vector is its own picture's, whatever batch it travelled in.
    vector = batches[1].vectors[4]
    alone = get_encoder().embed([load_rgb(io.BytesIO(pictures[4]))])[0]
    assert vector.shape == (512,)
    np.testing.assert_allclose(vector, alone, atol=1e-5)
    assert np.dot(vector, batches[0].vectors[0]) < np.dot(vector, alone) - 1e-3


def test_nothing_to_compute_yields_nothing():
    assert list(embeddings_compute(sources=[], batch_size=4)) == []


@pytest.mark.parametrize("name", sorted(accepted_files()))
def test_a_search_photo_reaches_the_network_as_its_stored_twin_does(name, tmp_path):
    """The web side's preparation of a visitor's photo gives the worker's pixels for the same file, exactly."""
    content = accepted_files()[name]
    # Pillow's decode, as on a CPU worker (a GPU worker's own JPEG decode is within
    # DEVICE_COSINE_TOLERANCE of it, tested in encoders/test_gpu.py).
    (stored,) = embeddings_compute(sources=sources_of({1: content}, tmp_path), batch_size=1, decode_on_device=False)

    pixels = query_pixels(picture_validate(upload(name, content)))
    identity, vector = embedding_of_picture(pixels)

    np.testing.assert_array_equal(
        np.frombuffer(pixels, dtype=np.uint8).reshape(PIXELS_SHAPE), get_encoder().pixels(load_rgb(io.BytesIO(content)))
    )
    assert identity == get_encoder().identity
    assert float(np.dot(vector, stored.vectors[1])) > 0.9999


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000))
def test_a_search_message_has_one_size_whatever_the_photos_shape(width, height):
    """The message to the worker is bounded by the network's input, not by the visitor's photo."""
    pixels = query_pixels(PILImage.new("RGB", (width, height), (width % 256, height % 256, 7)))
    identity, vector = embedding_of_picture(pixels)
    assert len(pixels) == 224 * 224 * 3 and vector.shape == (512,)


def test_a_search_message_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="150528 bytes"):
        embedding_of_picture(b"\xff\xd8\xff" + bytes(1000))


# --- The GPU path's per-file work, and its device failures (checked on the CPU) ------------


def test_a_progressive_jpeg_is_read_for_pillow_and_a_baseline_one_for_the_device(tmp_path):
    photo = photo_like(1, (320, 240))
    baseline, progressive = encode(photo), encode(photo, progressive=True)
    sources = sources_of({1: baseline, 2: progressive}, tmp_path)

    reads = [compute._read_one(source) for source in sources]

    assert [read.data for read in reads] == [bytearray(baseline), bytearray(progressive)]
    assert reads[0].header is not None and reads[0].header.frame == "baseline"
    assert reads[1].header is None  # Pillow's, on the decode threads


@pytest.mark.parametrize("opened_by", ["open", "storage"])
def test_a_file_is_read_whole_into_one_writable_buffer(tmp_path, opened_by):
    content = encode(photo_like(2, (640, 480)))
    (tmp_path / "photo.jpg").write_bytes(content)
    opened = {
        "open": lambda: (tmp_path / "photo.jpg").open("rb"),
        "storage": lambda: FileSystemStorage(location=tmp_path).open("photo.jpg", "rb"),
    }[opened_by]

    with opened() as handle:
        data = file_bytes(handle)

    assert isinstance(data, bytearray) and data == content


class OutOfMemoryOnce:
    """A forward pass that runs out of GPU memory on its first call, as one beside another
    process's allocations does; records each pass's size."""

    def __init__(self, encoder):
        self.encoder, self.sizes = encoder, []

    def __call__(self, pixels):
        self.sizes.append(len(pixels))
        if len(self.sizes) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.encoder.embed_pixels(pixels)


def encoder_out_of_memory_once():
    encoder = dataclasses.replace(get_encoder())
    encoder.embed_pixels = OutOfMemoryOnce(get_encoder())
    return encoder


def test_running_out_of_gpu_memory_halves_the_forward_pass_and_loses_nothing(tmp_path):
    files = {key: encode(photo_like(key, (320, 240))) for key in range(6)}
    encoder = encoder_out_of_memory_once()

    batches = list(embeddings_compute(sources=sources_of(files, tmp_path), batch_size=4, encoder=encoder))

    # The first pass of four failed; its halves went through, and so did the rest of the run.
    assert encoder.embed_pixels.sizes == [4, 2, 2, 2]
    assert [sorted(batch.vectors) for batch in batches] == [[0, 1, 2, 3], [4, 5]]
    assert not any(batch.failures for batch in batches)
    expected = get_encoder().embed([load_rgb(io.BytesIO(files[key])) for key in range(6)])
    for key in range(6):
        vector = batches[key // 4].vectors[key]
        np.testing.assert_allclose(vector, expected[key], atol=1e-5)


def test_a_single_picture_that_does_not_fit_is_the_devices_fault_not_the_pictures(tmp_path):
    encoder = dataclasses.replace(get_encoder())

    def no_memory_at_all(pixels):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    encoder.embed_pixels = no_memory_at_all

    with pytest.raises(torch.cuda.OutOfMemoryError) as raised:
        list(embeddings_compute(sources=sources_of({1: encode(photo_like(1))}, tmp_path), batch_size=4, encoder=encoder))
    assert compute.device_fault(raised.value) == "out of memory"
    assert compute.device_fault(RuntimeError("CUDA error: an illegal memory access was encountered")) == "broken"
    assert compute.device_fault(RuntimeError("a bug")) is None
