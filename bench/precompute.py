"""The original app's design: every image's top-k list computed offline, all at once.

The original kept a precomputed table of each image's most similar images, so every new
image meant recomputing all of it (the new image can be anyone's neighbour). This measures
that job with numpy on the same synthetic vectors, in a child process so its peak memory
is its own:

- ``full``: the whole n x n similarity matrix, then a partial sort per row (the direct way;
  its matrix needs 4 n^2 bytes, 37 GiB at 100k, so it runs only where that fits);
- ``blocked``: the same result computed 2,048 rows at a time, the best this design can do.

``run()`` is called by run_all.py; each measurement is ``precompute.py N MODE VECTORS.npy``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

import common

K = 10
BLOCK = 2048


def top_k_full(vectors: np.ndarray) -> np.ndarray:
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -np.inf)
    top = np.argpartition(-similarities, K, axis=1)[:, :K]
    order = np.take_along_axis(similarities, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def top_k_blocked(vectors: np.ndarray) -> np.ndarray:
    result = np.empty((len(vectors), K), dtype=np.int64)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK] @ vectors.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        top = np.argpartition(-block, K, axis=1)[:, :K]
        order = np.take_along_axis(block, top, axis=1).argsort(axis=1)[:, ::-1]
        result[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
    return result


def measure(n: int, mode: str, vectors_file: str) -> dict:
    vectors = np.load(vectors_file)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    (top_k_full if mode == "full" else top_k_blocked)(vectors)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "mode": mode,
        "k": K,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak / 1024, 1),
        "extra_rss_mb": round(max(0, peak - before) / 1024, 1),
        "vectors_mb": round(vectors.nbytes / 2**20, 1),
    }


def run(sizes: list[int], memory_limit_gib: float) -> list[dict]:
    results = []
    for n in sizes:
        # The child loads the vectors from a file, so generating them does not set its peak.
        vectors_file = common.OUT_DIR / f"vectors-{n}.npy"
        common.OUT_DIR.mkdir(parents=True, exist_ok=True)
        np.save(vectors_file, common.EmbeddingDistribution().sample(n))
        for mode in ("full", "blocked"):
            matrix_gib = 4 * n * n / 2**30
            if mode == "full" and matrix_gib > memory_limit_gib:
                results.append({"n": n, "mode": mode, "skipped": f"needs a {matrix_gib:.0f} GiB matrix"})
                continue
            output = subprocess.run(
                [sys.executable, __file__, str(n), mode, str(vectors_file)], capture_output=True, text=True, check=True
            ).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            common.log(f"precompute {mode} top-{K} at {n:,}: {results[-1]['seconds']} s, "
                       f"peak {results[-1]['peak_rss_mb']} MB")
        vectors_file.unlink()
    return results


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), sys.argv[2], sys.argv[3])))
