"""The GPU path: the device choice, batch sizes, JPEGs decoded as tensors, and the fallbacks to Pillow.

CI has no GPU, so the decode-on-device path runs here on CPU tensors (torchvision's decoder
on the CPU, the same orientation, resize and crop code): what differs on a GPU is nvJPEG
and half precision, which the tests at the end check where CUDA is present. Every test
names its device: ``get_encoder()`` is the CPU's under the test settings, whatever the
machine has, and the GPU tests load a CUDA encoder of their own beside it.
"""

import dataclasses
import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from gallery.models import Image as GalleryImage
from imaging import load_rgb
from similarity import compute
from similarity.compute import embeddings_compute
from similarity.encoders import gpu
from similarity.encoders.gpu import DEVICE_COSINE_TOLERANCE, DeviceJpegs, DeviceUnavailable, embedding_device, oriented
from similarity.encoders.registry import get_encoder
from similarity.jpeg import device_decodable
from similarity.tasks import images_embed
from tests.conftest import encode, photo_like

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; CI has none")

# Tolerances, by precision. Single precision on one device: a picture's vector in another
# batch, or through another route to the same pixels, can differ only by the order of float
# sums (none measured on the CPU with batches of 1, 3 and 8), so 1e-5 per component.
SINGLE_PRECISION_ATOL = 1e-5
# Half precision (the GPU's forward pass) against single precision, and half precision at
# two batch sizes (cuDNN picks other kernels, summing in another order): fp16 keeps about
# three significant digits per activation; vectors agree to a cosine of 0.999999 with the
# ImageNet weights on an H200 (similarity.encoders.resnet18), so 1e-4 leaves a hundredfold
# margin for the tests' random weights. Never compared component by component.
HALF_PRECISION_COSINE_TOLERANCE = 1e-4


def cpu_encoder():
    """The CPU worker's encoder, named as such: the reference the GPU is compared with."""
    return get_encoder(device="cpu")


def camera_photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """Smooth fields with per-pixel grain, as a camera's JPEG is: the hard case for rounding."""
    width, height = size
    base = photo_like(seed, (max(8, width // 4), max(8, height // 4))).resize(size, Image.Resampling.BICUBIC)
    grain = np.random.default_rng(seed).integers(-10, 11, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.int16) + grain, 0, 255).astype(np.uint8))


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# --- Choosing the device ----------------------------------------------------------------


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_means_the_gpu_where_there_is_one_and_the_cpu_elsewhere(settings, monkeypatch):
    settings.EMBEDDING_DEVICE = "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embedding_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert embedding_device() == torch.device("cuda")


def test_cpu_is_the_cpu_even_with_a_gpu(settings, one_gpu):
    settings.EMBEDDING_DEVICE = "cpu"
    assert embedding_device() == torch.device("cpu")


def test_a_numbered_gpu_is_that_gpu(settings, one_gpu):
    settings.EMBEDDING_DEVICE = "cuda:0"
    assert embedding_device() == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("configured", "says"),
    [
        ("cuda", "torch sees no CUDA GPU"),
        ("cuda:0", "torch sees no CUDA GPU"),
        ("gpu", "use auto, cpu, cuda or cuda:N"),
        ("cuda:first", "use auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_device_that_is_not_there_says_which_setting_to_change(settings, no_gpu, configured, says):
    settings.EMBEDDING_DEVICE = configured
    with pytest.raises(DeviceUnavailable, match="EMBEDDING_DEVICE") as raised:
        embedding_device()
    assert says in str(raised.value)


def test_a_gpu_number_beyond_the_machines_gpus_is_refused(settings, one_gpu):
    settings.EMBEDDING_DEVICE = "cuda:1"
    with pytest.raises(DeviceUnavailable, match="has 1 GPU"):
        embedding_device()


def test_batches_are_larger_on_a_gpu(settings, monkeypatch):
    settings.EMBEDDING_BATCH_SIZE, settings.EMBEDDING_CUDA_BATCH_SIZE = 16, 256
    settings.EMBEDDING_DEVICE = "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute.batch_size() == 16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compute.batch_size() == 256
    settings.EMBEDDING_DEVICE = "cpu"
    assert compute.batch_size() == 16


@pytest.mark.django_db
def test_a_task_on_a_worker_without_its_gpu_leaves_the_images_pending(image_factory, settings, no_gpu):
    image = image_factory(1)
    settings.EMBEDDING_DEVICE = "cuda"

    outcome = images_embed.run([image.pk])

    image.refresh_from_db()
    assert outcome == {"pending": [image.pk]}
    assert image.embedding_status == GalleryImage.Status.PENDING
    assert image.embedding_attempts == 0  # never claimed: no attempt counted against it


# --- Decoding JPEGs as tensors (CPU tensors here) ---------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_tensor_is_turned_upright_exactly_as_pillow_turns_the_picture(orientation):
    data = encode(photo_like(3, (64, 40)), exif=exif_with(orientation), quality=95)
    decoded = get_encoder().jpegs._decode([data])[0]

    upright = oriented(decoded, device_decodable(data).orientation).permute(1, 2, 0).numpy()

    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert upright.shape == expected.shape
    np.testing.assert_array_equal(upright, expected)


SIZES = [(3000, 2000), (1200, 1600), (1001, 777), (640, 480), (300, 225), (224, 224), (200, 150)]


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_prepared_pixels_match_pillows_within_one_level(size):
    encoder = get_encoder()
    data = encode(camera_photo(5, size))

    prepared, refused = encoder.prepare_jpegs([data], [1])

    ours = prepared[0].permute(1, 2, 0).numpy().astype(int)
    pillows = encoder.pixels(load_rgb(io.BytesIO(data), draft_min_side=None)).astype(int)
    assert refused == []
    # Tolerance: one grey level (rounding between Pillow's two integer passes), rarely.
    assert np.abs(ours - pillows).max() <= 1
    assert np.abs(ours - pillows).mean() < 0.25


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("image_mode", ["RGB", "L"])
def test_vectors_from_the_tensor_path_agree_with_the_cpu_workers(orientation, image_mode):
    encoder = get_encoder()
    data = encode(camera_photo(orientation, (1500, 1000)).convert(image_mode), exif=exif_with(orientation))
    header = device_decodable(data)

    prepared, _ = encoder.prepare_jpegs([data], [header.orientation])
    on_device = encoder.embed_prepared(prepared, [])[0]
    # The CPU worker's own path: Pillow's reduced-scale decode, then the encoder's pixels.
    on_cpu = encoder.embed([load_rgb(io.BytesIO(data))])[0]

    assert float(on_device @ on_cpu) >= 1 - DEVICE_COSINE_TOLERANCE


def test_pictures_of_different_sizes_in_one_batch_keep_their_order():
    encoder = get_encoder()
    sizes = [(640, 480), (480, 640), (640, 480), (300, 300)]
    files = [encode(camera_photo(seed, size)) for seed, size in enumerate(sizes)]

    together, _ = encoder.prepare_jpegs(files, [1] * len(files))

    for index, data in enumerate(files):
        alone, _ = encoder.prepare_jpegs([data], [1])
        torch.testing.assert_close(together[index], alone[0], rtol=0, atol=0)


def mixed_batch(chunk_repeats: int = 0) -> tuple[list[bytes], list[int]]:
    """Several sizes, upright and turned a quarter (orientation 6), interleaved; one size
    ``gpu.RESIZE_CHUNK + chunk_repeats`` times, so its resize is split across chunks."""
    cases = [((640, 480), 1), ((480, 640), 6), ((300, 225), 1), ((640, 480), 6), ((500, 500), 1), ((1001, 777), 6)]
    cases += [((96, 72), 1 if turn % 3 else 6) for turn in range(gpu.RESIZE_CHUNK + chunk_repeats)]
    cases = cases[::2] + cases[1::2]
    files = [encode(camera_photo(seed, size), exif=exif_with(turn)) for seed, (size, turn) in enumerate(cases)]
    return files, [device_decodable(data).orientation for data in files]


def test_a_batch_of_mixed_sizes_and_orientations_prepares_each_picture_as_alone():
    encoder = get_encoder()
    files, orientations = mixed_batch(chunk_repeats=3)

    together, refused = encoder.prepare_jpegs(files, orientations)

    assert refused == [] and set(orientations) == {1, 6}
    assert together.shape == (len(files), 3, 224, 224)
    for index, (data, orientation) in enumerate(zip(files, orientations)):
        alone, _ = encoder.prepare_jpegs([data], [orientation])
        torch.testing.assert_close(together[index], alone[0], rtol=0, atol=0)


@needs_cuda
def test_resizing_a_batch_of_mixed_sizes_never_waits_for_the_gpu(gpu_encoder):
    # A wait per size group becomes a wait per picture when every photo's size differs.
    files, orientations = mixed_batch()
    pictures = [oriented(picture, turn) for picture, turn in zip(gpu_encoder.jpegs._decode(files), orientations)]
    torch.cuda.synchronize()

    torch.cuda.set_sync_debug_mode("error")
    try:
        pixels = gpu_encoder.jpegs._resize_and_crop(pictures)
    finally:
        torch.cuda.set_sync_debug_mode("default")

    assert pixels.shape == (len(files), 3, 224, 224)


# --- The pipeline: what the device takes, and what falls back to Pillow -------------------


def sources_of(files: dict[int, bytes | None], tmp_path):
    sources = []
    for key, content in files.items():
        path = tmp_path / f"{key}.bin"
        if content is not None:
            path.write_bytes(content)
        sources.append((key, lambda path=path: path.open("rb")))
    return sources


@pytest.fixture
def spied_encoder(monkeypatch):
    """A copy of the process's encoder that records what reaches its device decoder and can refuse files."""
    encoder = dataclasses.replace(get_encoder(), jpegs=DeviceJpegs(get_encoder().device))
    encoder.sent_to_device, encoder.refuse = [], set()
    real_decode = encoder.jpegs._decode

    def decode(jpegs):
        encoder.sent_to_device.extend(bytes(jpeg) for jpeg in jpegs)
        decoded = real_decode(jpegs)
        return [None if bytes(jpeg) in encoder.refuse else picture for jpeg, picture in zip(jpegs, decoded)]

    monkeypatch.setattr(encoder.jpegs, "_decode", decode)
    return encoder


def test_files_the_gpu_cannot_decode_go_through_pillow_and_each_failure_stays_its_own(spied_encoder, tmp_path):
    photo = camera_photo(7, (800, 600))
    files = {
        1: encode(photo),
        2: encode(photo, progressive=True),
        3: encode(photo, exif=exif_with(6)),
        4: encode(photo, "PNG"),
        5: encode(photo, "WEBP", quality=90),
        6: encode(photo, "TIFF"),
        7: encode(photo.convert("CMYK")),
        8: encode(camera_photo(8, (800, 600))),  # the GPU decoder refuses it below
        9: b"not a picture",
        10: None,  # the stored file is gone
    }
    spied_encoder.refuse.add(files[8])

    batches = list(
        embeddings_compute(
            sources=sources_of(files, tmp_path), batch_size=4, decode_on_device=True, encoder=spied_encoder
        )
    )

    # Batches keep their keys, whichever way each file went.
    keys = [sorted(batch.vectors) + sorted(batch.failures) for batch in batches]
    assert keys == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    # Only baseline JPEGs go to the device: a progressive one is Pillow's (faster on the CPUs).
    assert set(spied_encoder.sent_to_device) == {files[1], files[3], files[8]}
    failures = {key: reason for batch in batches for key, reason in batch.failures.items()}
    assert failures[10] == "The stored file is missing."
    assert failures[9].startswith("The image cannot be decoded")
    vectors = {key: vector for batch in batches for key, vector in batch.vectors.items()}
    cpu = {key: cpu_encoder().embed([load_rgb(io.BytesIO(files[key]))])[0] for key in vectors}
    for key in (2, 4, 5, 6, 7, 8):  # through Pillow: exactly the CPU worker's vector
        np.testing.assert_allclose(vectors[key], cpu[key], atol=SINGLE_PRECISION_ATOL)
    for key in (1, 2, 3):  # decoded as tensors: within the stated tolerance
        assert float(vectors[key] @ cpu[key]) >= 1 - DEVICE_COSINE_TOLERANCE
    assert float(vectors[1] @ vectors[3]) < 1 - 1e-3  # the turned photo really was turned


def test_a_picture_over_the_pixel_limit_fails_as_on_the_cpu(spied_encoder, tmp_path, monkeypatch):
    # Under half the first file's pixels: Pillow refuses it outright, without a warning first.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 640 * 480 // 2 - 1)
    files = {1: encode(camera_photo(1, (640, 480))), 2: encode(camera_photo(2, (320, 240)))}
    sources = sources_of(files, tmp_path)

    (batch,) = embeddings_compute(sources=sources, batch_size=4, decode_on_device=True, encoder=spied_encoder)

    assert sorted(batch.vectors) == [2]
    assert "too many pixels" in batch.failures[1]
    assert spied_encoder.sent_to_device == [files[2]]


def test_stopping_early_leaves_no_batch_half_yielded(spied_encoder, tmp_path):
    files = {key: encode(camera_photo(key, (320, 240))) for key in range(9)}
    sources = sources_of(files, tmp_path)
    batches = embeddings_compute(sources=sources, batch_size=2, decode_on_device=True, encoder=spied_encoder)

    first = next(batches)
    batches.close()  # as a time limit does: the batches decoding ahead are dropped

    assert sorted(first.vectors) == [0, 1]


def test_a_gpu_worker_without_gpu_decoding_runs_pillow_two_batches_ahead_with_the_same_results(tmp_path):
    files = {key: encode(camera_photo(key, (320, 240))) for key in range(7)}
    files[3] = b"not a picture"
    sources = sources_of(files, tmp_path)
    batches = [sources[start : start + 2] for start in range(0, len(sources), 2)]

    ahead = list(compute._compute_decoding_with_pillow(get_encoder(), batches, lookahead=2))
    as_today = list(embeddings_compute(sources=sources, batch_size=2))

    assert [sorted(batch.vectors) + sorted(batch.failures) for batch in ahead] == [[0, 1], [2, 3], [4, 5], [6]]
    assert ahead[1].failures == as_today[1].failures
    for mine, theirs in zip(ahead, as_today):
        for key, vector in theirs.vectors.items():
            np.testing.assert_allclose(mine.vectors[key], vector, atol=SINGLE_PRECISION_ATOL)


# --- When the device decoder fails ------------------------------------------------------


class RefusingDecoder:
    """Stands in for nvJPEG where it is unusable (no hardware decoder): every call fails."""

    def __init__(self):
        self.calls = 0

    def __call__(self, tensors, **options):
        self.calls += 1
        raise RuntimeError("nvjpegCreate failed: NVJPEG_STATUS_ARCH_MISMATCH")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_failing_device_decoder_is_reported_then_left_to_pillow_for_a_while(caplog):
    decoder, clock = RefusingDecoder(), Clock()
    jpegs = DeviceJpegs(torch.device("cpu"), decode=decoder, clock=clock)
    files = [encode(camera_photo(seed, (64, 48))) for seed in range(3)]

    with caplog.at_level(logging.INFO, logger=gpu.__name__):
        outcomes = [jpegs.prepare(files, [1] * len(files)) for _ in range(gpu.DECODER_FAILURES_BEFORE_PILLOW)]
        calls_while_failing = decoder.calls
        cooling = jpegs.prepare(files, [1] * len(files))

    # Each file is refused (for Pillow), and the first refusal says why, once.
    assert all(pixels is None and refused == [0, 1, 2] for pixels, refused in outcomes)
    assert calls_while_failing == gpu.DECODER_FAILURES_BEFORE_PILLOW * (1 + len(files))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NVJPEG_STATUS_ARCH_MISMATCH" in warnings[0]
    assert any("every file goes through Pillow" in record.getMessage() for record in caplog.records)
    # Then the decoder is left alone: no more failing calls, everything to Pillow.
    assert cooling == (None, [0, 1, 2]) and decoder.calls == calls_while_failing and not jpegs.in_use()

    clock.now += gpu.DECODER_COOL_DOWN_SECONDS
    jpegs.decode = torchvision_decoder()  # the decoder came back (a driver restart, say)
    pixels, refused = jpegs.prepare(files, [1] * len(files))
    assert refused == [] and pixels.shape == (3, 3, 224, 224)


def torchvision_decoder():
    from torchvision.io import decode_jpeg

    return decode_jpeg


def test_one_bad_file_per_chunk_does_not_send_the_worker_to_pillow():
    jpegs = DeviceJpegs(torch.device("cpu"))
    good = encode(camera_photo(1, (64, 48)))
    broken = good[:2] + b"\xff\xc0" + bytes(20) + good[2:]  # a JPEG header torchvision's decoder refuses

    for _ in range(gpu.DECODER_FAILURES_BEFORE_PILLOW - 1):
        assert jpegs.prepare([good, broken], [1, 1])[1] == [1]
    assert jpegs.prepare([good, good], [1, 1])[1] == []  # a chunk that decodes resets the count
    assert jpegs.prepare([good, broken], [1, 1])[1] == [1]
    assert jpegs.in_use()


def test_warm_up_times_a_batch_and_logs_the_rate(caplog):
    with caplog.at_level(logging.INFO, logger=gpu.__name__):
        rate = DeviceJpegs(torch.device("cpu")).warm_up(files=4)

    assert rate > 0
    assert f"{rate:.0f} photos/s" in caplog.text


# --- On a GPU ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_encoder():
    from similarity.encoders import resnet18
    from similarity.weights import model_identity

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; CI has none")
    return resnet18.load(weights="random", seed=0, identity=model_identity("random", 0), device="cuda")


def test_the_reference_encoder_is_the_cpus_whatever_the_machine_has():
    # What every comparison with "the CPU worker" below rests on.
    assert get_encoder().device == cpu_encoder().device == torch.device("cpu")
    assert not get_encoder().on_gpu


@needs_cuda
def test_half_precision_on_the_gpu_agrees_with_the_cpu(gpu_encoder):
    pictures = [camera_photo(seed, (640, 480)) for seed in range(8)]
    pixels = [cpu_encoder().pixels(picture) for picture in pictures]

    on_gpu = gpu_encoder.embed_pixels(pixels)
    on_cpu = cpu_encoder().embed_pixels(pixels)

    assert gpu_encoder.on_gpu and not cpu_encoder().on_gpu
    assert gpu_encoder.identity == cpu_encoder().identity
    assert np.min(np.sum(on_gpu * on_cpu, axis=1)) >= 1 - HALF_PRECISION_COSINE_TOLERANCE


@needs_cuda
def test_a_pictures_vector_on_the_gpu_does_not_depend_on_its_batch(gpu_encoder):
    pixels = [cpu_encoder().pixels(camera_photo(seed, (640, 480))) for seed in range(8)]

    alone = gpu_encoder.embed_pixels(pixels[:1])[0]
    in_a_batch = gpu_encoder.embed_pixels(pixels)[0]

    assert float(alone @ in_a_batch) >= 1 - HALF_PRECISION_COSINE_TOLERANCE


@needs_cuda
def test_nvjpeg_pixels_and_vectors_agree_with_the_cpu_path(gpu_encoder):
    files = [encode(camera_photo(seed, (3000, 2000)), exif=exif_with(turn)) for seed, turn in [(1, 1), (2, 6)]]
    orientations = [device_decodable(data).orientation for data in files]

    on_gpu, refused = gpu_encoder.prepare_jpegs(files, orientations)
    on_cpu, _ = cpu_encoder().prepare_jpegs(files, orientations)

    assert refused == []
    assert on_gpu.device.type == "cuda" and on_cpu.device.type == "cpu"
    # nvJPEG's inverse DCT and chroma upsampling are not libjpeg-turbo's: a few levels, rarely.
    difference = (on_gpu.cpu().int() - on_cpu.int()).abs()
    assert difference.float().mean() < 1.0
    vectors = gpu_encoder.embed_prepared(on_gpu, [])
    expected = cpu_encoder().embed([load_rgb(io.BytesIO(data)) for data in files])
    assert np.min(np.sum(vectors * expected, axis=1)) >= 1 - DEVICE_COSINE_TOLERANCE


@needs_cuda
def test_the_gpu_decoder_warms_up_and_says_how_fast_it_is(gpu_encoder, caplog):
    with caplog.at_level(logging.INFO, logger=gpu.__name__):
        rate = gpu_encoder.jpegs.warm_up()

    # The hardware decoder prepares thousands of 1024x768 photos a second; torchvision's
    # fallback decodes them one at a time on one core, near a hundred a second.
    assert rate > 300
    assert "photos/s" in caplog.text


@needs_cuda
@pytest.mark.end_to_end
def test_a_gpu_worker_stores_what_a_cpu_worker_would(start_worker, tmp_path):
    from gallery.services import image_create
    from tests.conftest import upload, wait_for

    start_worker(extra_env={"IMAGEREC_TEST_EMBEDDING_DEVICE": "cuda"})
    photos = {seed: encode(camera_photo(seed, (1200, 900)), exif=exif_with(6 if seed % 2 else 1)) for seed in range(6)}
    photos[6] = encode(camera_photo(6, (1200, 900)), "PNG")  # through Pillow on the worker's CPU
    images = {
        seed: image_create(upload=upload(f"photo-{seed}", data, "image/png" if seed == 6 else "image/jpeg"))
        for seed, data in photos.items()
    }

    wait_for(lambda: GalleryImage.objects.ready().count() == len(images), timeout=180, message="the embeddings")
    for seed, image in images.items():
        stored = np.asarray(image.embeddings.get().vector, dtype=np.float32)
        expected = cpu_encoder().embed([load_rgb(io.BytesIO(photos[seed]))])[0]
        # halfvec storage keeps about three significant digits on top of the stated tolerance.
        assert float(stored @ expected) / float(np.linalg.norm(stored)) >= 1 - DEVICE_COSINE_TOLERANCE - 1e-3
