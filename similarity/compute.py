"""Files in, vectors out: the worker's decode-and-forward pipeline.

Decoding runs in a pool of threads (Pillow releases the GIL), one per CPU the worker process
may use, so a batch decodes on all of them at once. Batches form a pipeline: batch n+1
decodes while batch n goes through the network and while the caller stores its vectors
(``embeddings_compute`` is a generator that yields each batch as soon as it is embedded).

Knows nothing of gallery images: a source is a key and a function that opens the file.
The encoder (torch) is loaded on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from imagerec.imaging import UndecodableImage, load_rgb

Source = tuple[int, Callable[[], BinaryIO]]  # (key, open the file for reading)


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


@functools.cache
def _decode_threads(count: int, pid: int) -> ThreadPoolExecutor:
    """This process's decode threads (keyed by pid: a forked child makes its own)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="decode")


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
        return None, "The stored file is missing.", time.thread_time() - started
    return pixels, None, time.thread_time() - started


def _decode_start(sources: Sequence[Source], prepare: Callable, threads: int) -> list[Future]:
    pool = _decode_threads(max(1, threads), os.getpid())
    return [pool.submit(_decode_one, source, prepare) for source in sources]


def embeddings_compute(*, sources: Sequence[Source], batch_size: int) -> Iterator[ComputedBatch]:
    """Decode and embed ``sources`` in batches of ``batch_size``, yielding each batch.

    A file that cannot be decoded fails alone; the rest of its batch goes on.
    """
    from .encoder import get_encoder  # the worker's path only: torch stays out of web processes

    if not sources:
        return
    encoder = get_encoder()
    batches = [sources[start : start + batch_size] for start in range(0, len(sources), batch_size)]
    in_flight = _decode_start(batches[0], encoder.pixels, encoder.threads)
    for index, batch in enumerate(batches):
        result = ComputedBatch()
        waited = time.perf_counter()
        decoded = []
        for (key, _), future in zip(batch, in_flight):
            pixels, failure, cpu = future.result()
            result.decode_cpu += cpu
            if failure is None:
                decoded.append((key, pixels))
            else:
                result.failures[key] = failure
        decoded_at = time.perf_counter()
        if index + 1 < len(batches):
            # The next batch decodes while this one goes through the network and is stored.
            # With torch's threads waiting passively, sharing the cores this way measured as
            # fast as taking turns, and the database writes no longer leave them idle.
            in_flight = _decode_start(batches[index + 1], encoder.pixels, encoder.threads)
        vectors = encoder.embed_pixels([pixels for _, pixels in decoded])
        result.vectors = {key: vector for (key, _), vector in zip(decoded, vectors)}
        result.decode_wait = decoded_at - waited
        result.forward = time.perf_counter() - decoded_at
        yield result


def embedding_of_picture(data: bytes) -> tuple[str, np.ndarray]:
    """(model identity, vector) of one picture given as file bytes: a visitor's search."""
    import io

    from .encoder import get_encoder

    encoder = get_encoder()
    return encoder.identity, encoder.embed([load_rgb(io.BytesIO(data))])[0]
