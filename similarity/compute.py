"""Files in, vectors out: the worker's decode-and-forward pipeline.

Decoding runs in a pool of threads (Pillow releases the GIL), one per CPU the worker process
may use, so a batch decodes on all of them at once. Batches form a pipeline: batch n+1
decodes while batch n goes through the network and while the caller stores its vectors
(``embeddings_compute`` is a generator that yields each batch as soon as it is embedded).

On a GPU (``EMBEDDING_DEVICE``) batches are larger (EMBEDDING_CUDA_BATCH_SIZE) and, with
EMBEDDING_CUDA_DECODE, JPEGs are decoded there: the decode threads read the files and their
headers, a JPEG the GPU takes goes to nvJPEG in the batch (``prepare_jpegs``, on
threads of its own, two batches ahead of the network), and everything else, or anything the
GPU decoder refuses, goes through Pillow on the decode threads meanwhile, as on a CPU worker.
Only baseline JPEGs go to the GPU (``similarity.jpeg`` says why).

Running out of GPU memory in a forward pass halves the pass and tries again
(``_embed_in_parts``); ``device_fault`` tells the caller when a failure was the device's,
not the images'.

Knows nothing of gallery images: a source is a key and a function that opens the file.
The encoder (torch) is loaded on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import collections
import functools
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from django.conf import settings
from PIL import Image

from imaging import UndecodableImage, load_rgb

from .jpeg import JpegHeader, device_decodable
from .preprocessing import PIXELS_BYTES, PIXELS_SHAPE

logger = logging.getLogger(__name__)

Source = tuple[int, Callable[[], BinaryIO]]  # (key, open the file for reading)
MISSING = "The stored file is missing."
# Batches being decoded ahead of the network on a GPU worker: the decoder never waits for the
# network or for the caller's database writes, and the network never waits for the decoder
# while one batch's worth is ready.
DEVICE_LOOKAHEAD = 2


@dataclass
class ComputedBatch:
    """One batch through the network: vectors by key, and the keys that failed, with why."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    # Wall seconds this thread waited for decoding and spent in the forward pass, and the
    # CPU seconds the decode threads spent on this batch.
    decode_wait: float = 0.0
    forward: float = 0.0
    decode_cpu: float = 0.0


def batch_size() -> int:
    """Images per forward pass on this process's device (EMBEDDING_DEVICE)."""
    from .encoders.gpu import embedding_device  # the worker's path only: torch stays out of web processes

    return settings.EMBEDDING_CUDA_BATCH_SIZE if embedding_device().type == "cuda" else settings.EMBEDDING_BATCH_SIZE


def device_fault(error: BaseException) -> str | None:
    """"out of memory" or "broken" when ``error`` is the GPU's (``encoders.gpu.device_fault``), else None."""
    if "torch" not in sys.modules:
        return None  # nothing ran on a device in this process
    from .encoders.gpu import device_fault as fault_of_the_device

    return fault_of_the_device(error)


@dataclass
class _ForwardLimit:
    """The most images one forward pass takes in this run; halved by each out-of-memory error."""

    images: int


def _embed_in_parts(embed: Callable[[int, int], np.ndarray], count: int, limit: _ForwardLimit) -> np.ndarray:
    """Vectors for items ``[0, count)``, ``embed(start, stop)`` giving those of a slice.

    Forward passes take at most ``limit.images`` items; a pass that runs out of GPU memory
    is halved and tried again (and the limit stays halved for the rest of the run), so a
    batch that does not fit beside another process's memory still goes through. A single
    image that does not fit raises the error, which the caller counts as the device's fault.
    """
    if count == 0:
        return embed(0, 0)
    parts, start = [], 0
    while start < count:
        stop = min(count, start + limit.images)
        try:
            parts.append(embed(start, stop))
        except RuntimeError as error:
            if stop - start == 1 or device_fault(error) != "out of memory":
                raise
            limit.images = (stop - start) // 2
            logger.warning(
                "Out of GPU memory with %d images in a forward pass; trying %d at a time", stop - start, limit.images
            )
            continue
        start = stop
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


@functools.cache
def _decode_threads(count: int, pid: int) -> ThreadPoolExecutor:
    """This process's decode threads (keyed by pid: a forked child makes its own)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="decode")


@functools.cache
def _device_threads(count: int, pid: int) -> ThreadPoolExecutor:
    """Threads that hand batches of JPEGs to the GPU decoder and prepare them there."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="device-decode")


def _decode_one(source: Source, prepare: Callable) -> tuple[object, str | None, float]:
    """(prepared pixels, failure reason, CPU seconds spent); runs in a decode thread."""
    started = time.thread_time()
    _, open_file = source
    try:
        with open_file() as handle:
            pixels = prepare(load_rgb(handle))
    except UndecodableImage as error:
        return None, str(error), time.thread_time() - started
    except FileNotFoundError:
        return None, MISSING, time.thread_time() - started
    return pixels, None, time.thread_time() - started


def _decode_start(sources: Sequence[Source], prepare: Callable, threads: int) -> list[Future]:
    pool = _decode_threads(max(1, threads), os.getpid())
    return [pool.submit(_decode_one, source, prepare) for source in sources]


def embeddings_compute(
    *,
    sources: Sequence[Source],
    batch_size: int,
    decode_on_device: bool | None = None,
    encoder=None,
) -> Iterator[ComputedBatch]:
    """Decode and embed ``sources`` in batches of ``batch_size``, yielding each batch.

    A file that cannot be decoded fails alone; the rest of its batch goes on.
    ``decode_on_device`` (default: on a GPU, EMBEDDING_CUDA_DECODE) decodes JPEGs with the
    encoder's device, a CPU one too (which the tests use to check that path without a GPU).
    """
    from .encoders.registry import get_encoder  # loads the encoder (torch) on the worker's path only

    if not sources:
        return
    encoder = encoder or get_encoder()
    if decode_on_device is None:
        decode_on_device = encoder.on_gpu and settings.EMBEDDING_CUDA_DECODE
    batches = [sources[start : start + batch_size] for start in range(0, len(sources), batch_size)]
    if decode_on_device:
        yield from _compute_decoding_on_device(encoder, batches)
    else:
        lookahead = DEVICE_LOOKAHEAD if encoder.on_gpu else 1
        yield from _compute_decoding_with_pillow(encoder, batches, lookahead=lookahead)


def _compute_decoding_with_pillow(
    encoder, batches: list[Sequence[Source]], *, lookahead: int
) -> Iterator[ComputedBatch]:
    # Decoding ahead: on a CPU the next batch decodes while this one goes through the network
    # and is stored. With torch's threads waiting passively, sharing the cores this way
    # measured as fast as taking turns, and the database writes no longer leave them idle.
    # A GPU worker decodes two batches ahead, so the threads never idle at a batch's end.
    in_flight = collections.deque(
        _decode_start(batch, encoder.pixels, encoder.threads) for batch in batches[:lookahead]
    )
    limit = _ForwardLimit(max(1, max(map(len, batches))))
    try:
        for index, batch in enumerate(batches):
            result = ComputedBatch()
            waited = time.perf_counter()
            decoded = []
            for (key, _), future in zip(batch, in_flight.popleft()):
                pixels, failure, cpu = future.result()
                result.decode_cpu += cpu
                if failure is None:
                    decoded.append((key, pixels))
                else:
                    result.failures[key] = failure
            decoded_at = time.perf_counter()
            if index + lookahead < len(batches):
                in_flight.append(_decode_start(batches[index + lookahead], encoder.pixels, encoder.threads))
            batch_pixels = [pixels for _, pixels in decoded]
            vectors = _embed_in_parts(
                lambda start, stop: encoder.embed_pixels(batch_pixels[start:stop]), len(batch_pixels), limit
            )
            result.vectors = {key: vector for (key, _), vector in zip(decoded, vectors)}
            result.decode_wait = decoded_at - waited
            result.forward = time.perf_counter() - decoded_at
            yield result
    finally:
        _cancel(future for futures in in_flight for future in futures)


# --- Decoding on the device -------------------------------------------------------------


@dataclass
class _Read:
    """One file's bytes, and its header if the device may decode it (else Pillow will)."""

    key: int
    data: bytearray | None = None
    header: JpegHeader | None = None
    failure: str | None = None
    cpu: float = 0.0


@dataclass
class _Prepared:
    """A batch ready for the network: pixels made on the device and by Pillow, by key."""

    device_pixels: object = None  # uint8 tensor, N x 3 x 224 x 224, on the encoder's device
    device_keys: list[int] = field(default_factory=list)
    host_pixels: list[np.ndarray] = field(default_factory=list)
    host_keys: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    cpu: float = 0.0


def _read_one(source: Source) -> _Read:
    """Read a file and its header; runs in a decode thread, so reads overlap everything else."""
    started = time.thread_time()
    key, open_file = source
    read = _Read(key=key)
    try:
        with open_file() as handle:
            read.data = file_bytes(handle)
    except FileNotFoundError:
        read.failure = MISSING
    else:
        read.header = device_decodable(read.data, max_pixels=Image.MAX_IMAGE_PIXELS)
    read.cpu = time.thread_time() - started
    return read


def file_bytes(handle: BinaryIO) -> bytearray:
    """The rest of an open file in one writable buffer (nvJPEG's input shares its memory).

    Read into a buffer of the file's size: ``bytearray(handle.read())`` would copy every
    byte twice (into the bytes object, then into the bytearray); for a 1.1 MB photo this
    takes 71 µs of a decode thread instead of 121 µs.
    """
    # Django's File knows its size (an object store's without a file descriptor to ask).
    size = getattr(handle, "size", None)
    if not isinstance(size, int):
        try:
            size = os.fstat(handle.fileno()).st_size
        except (AttributeError, OSError, io.UnsupportedOperation):
            size = None
    size = size - handle.tell() if size is not None else None
    if not size or size < 0:
        return bytearray(handle.read())
    data = bytearray(size)
    with memoryview(data) as view:
        filled = 0
        while filled < size:
            count = handle.readinto(view[filled:])
            if not count:
                break
            filled += count
    del data[filled:]  # the file was shorter than it said
    data += handle.read()  # or longer
    return data


def _decode_bytes(read: _Read, prepare: Callable) -> tuple[object, str | None, float]:
    """Pillow's path for a file already read: (pixels, failure reason, CPU seconds)."""
    started = time.thread_time()
    try:
        pixels = prepare(load_rgb(io.BytesIO(read.data)))
    except UndecodableImage as error:
        return None, str(error), time.thread_time() - started
    return pixels, None, time.thread_time() - started


def _prepare_batch(encoder, reads: list[Future]) -> _Prepared:
    """Runs on a device thread: the batch's JPEGs through the GPU decoder, the rest through Pillow."""
    started = time.thread_time()
    pool = _decode_threads(max(1, encoder.threads), os.getpid())
    prepared = _Prepared()
    on_device, with_pillow = [], []
    for future in reads:
        read = future.result()
        prepared.cpu += read.cpu
        if read.failure is not None:
            prepared.failures[read.key] = read.failure
        elif read.header is None:
            with_pillow.append(read)
        else:
            on_device.append(read)
    # Pillow's files decode on the CPU threads while the GPU decodes the JPEGs.
    pillow = [(read.key, pool.submit(_decode_bytes, read, encoder.pixels)) for read in with_pillow]
    if on_device:
        pixels, refused = encoder.prepare_jpegs(
            [read.data for read in on_device], [read.header.orientation for read in on_device]
        )
        refused = set(refused)
        prepared.device_pixels = pixels
        prepared.device_keys = [read.key for index, read in enumerate(on_device) if index not in refused]
        for index in sorted(refused):
            read = on_device[index]
            pillow.append((read.key, pool.submit(_decode_bytes, read, encoder.pixels)))
    for key, future in pillow:
        pixels, failure, cpu = future.result()
        prepared.cpu += cpu
        if failure is None:
            prepared.host_pixels.append(pixels)
            prepared.host_keys.append(key)
        else:
            prepared.failures[key] = failure
    prepared.cpu += time.thread_time() - started
    return prepared


def _compute_decoding_on_device(encoder, batches: list[Sequence[Source]]) -> Iterator[ComputedBatch]:
    decode_pool = _decode_threads(max(1, encoder.threads), os.getpid())
    device_pool = _device_threads(DEVICE_LOOKAHEAD, os.getpid())

    def start(batch: Sequence[Source]) -> tuple[list[Future], Future]:
        reads = [decode_pool.submit(_read_one, source) for source in batch]
        return reads, device_pool.submit(_prepare_batch, encoder, reads)

    in_flight = collections.deque(start(batch) for batch in batches[:DEVICE_LOOKAHEAD])
    limit = _ForwardLimit(max(1, max(map(len, batches))))
    try:
        for index in range(len(batches)):
            waited = time.perf_counter()
            prepared: _Prepared = in_flight.popleft()[1].result()
            decoded_at = time.perf_counter()
            if index + DEVICE_LOOKAHEAD < len(batches):
                in_flight.append(start(batches[index + DEVICE_LOOKAHEAD]))
            keys = prepared.device_keys + prepared.host_keys
            vectors = _embed_in_parts(functools.partial(_embed_prepared_slice, encoder, prepared), len(keys), limit)
            yield ComputedBatch(
                vectors=dict(zip(keys, vectors)),
                failures=prepared.failures,
                decode_wait=decoded_at - waited,
                forward=time.perf_counter() - decoded_at,
                decode_cpu=prepared.cpu,
            )
    finally:
        _cancel(future for reads, prepare in in_flight for future in (prepare, *reads))


def _embed_prepared_slice(encoder, prepared: _Prepared, start: int, stop: int) -> np.ndarray:
    """Vectors of keys ``[start, stop)`` of ``device_keys + host_keys``."""
    on_device = len(prepared.device_keys)
    device_pixels = prepared.device_pixels
    if device_pixels is not None:
        device_pixels = device_pixels[min(start, on_device) : min(stop, on_device)]
    host_pixels = prepared.host_pixels[max(start - on_device, 0) : max(stop - on_device, 0)]
    return encoder.embed_prepared(device_pixels, host_pixels)


def _cancel(futures) -> None:
    """Drop work not yet started when the caller stops early (a time limit, an error)."""
    for future in futures:
        future.cancel()


def embedding_of_picture(pixels: bytes) -> tuple[str, np.ndarray]:
    """(model identity, vector) of a visitor's search: the picture's network pixels, prepared by
    the web process with ``preprocessing.network_pixels`` as this worker prepares a stored image."""
    from .encoders.registry import get_encoder

    if len(pixels) != PIXELS_BYTES:
        raise ValueError(f"A search's pixels are {PIXELS_BYTES} bytes ({PIXELS_SHAPE}), not {len(pixels)}.")
    encoder = get_encoder()
    return encoder.identity, encoder.embed_pixels([np.frombuffer(pixels, dtype=np.uint8).reshape(PIXELS_SHAPE)])[0]
