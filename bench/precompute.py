"""The original app's design: every image's top-k list computed offline, all at once.

The original kept a table of each image's most similar images, so every new image meant
recomputing all of it. This measures that job with numpy on the same synthetic vectors, in
a child process so its peak memory is its own: ``full`` forms the whole n x n similarity
matrix (4 n^2 bytes: run only where that fits), ``blocked`` 2,048 rows at a time.

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


def top_k(similarities: np.ndarray, offset: int = 0) -> np.ndarray:
    similarities[np.arange(len(similarities)), np.arange(offset, offset + len(similarities))] = -np.inf
    top = np.argpartition(-similarities, K, axis=1)[:, :K]
    order = np.take_along_axis(similarities, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def measure(n: int, mode: str, vectors_file: str) -> dict:
    vectors = np.load(vectors_file)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "full":
        top_k(vectors @ vectors.T)
    else:
        for begin in range(0, len(vectors), BLOCK):
            top_k(vectors[begin : begin + BLOCK] @ vectors.T, begin)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "mode": mode, "k": K, "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 1024, 1),
            "extra_rss_mb": round(max(0, peak - before) / 1024, 1), "vectors_mb": round(vectors.nbytes / 2**20, 1)}


def run(sizes: list[int], memory_limit_gib: float = 8) -> list[dict]:
    results = []
    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        # The child loads the vectors from a file, so generating them does not set its peak.
        vectors_file = common.OUT_DIR / f"vectors-{n}.npy"
        np.save(vectors_file, common.EmbeddingDistribution().sample(n))
        for mode in ("full", "blocked"):
            matrix_gib = 4 * n * n / 2**30
            if mode == "full" and matrix_gib > memory_limit_gib:
                results.append({"n": n, "mode": mode, "skipped": f"needs a {matrix_gib:.0f} GiB matrix"})
                continue
            output = subprocess.run([sys.executable, __file__, str(n), mode, str(vectors_file)],
                                    capture_output=True, text=True, check=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            common.log(f"precompute {mode} top-{K} at {n:,}: {results[-1]['seconds']} s, "
                       f"peak {results[-1]['peak_rss_mb']} MB")
        vectors_file.unlink()
    return results


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), sys.argv[2], sys.argv[3])))
