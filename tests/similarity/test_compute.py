"""Files in, vectors out: batches through the network, with failures kept to their own file."""

import io
from pathlib import Path

import numpy as np

from imagerec.imaging import load_rgb
from similarity.compute import embeddings_compute
from similarity.encoder import get_encoder
from tests.conftest import encode, photo_like


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
