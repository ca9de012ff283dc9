"""A longer run of the upload fuzz test: more damaged files, several seeds, for as long as asked.

The suite runs ``tests/test_upload_fuzz.py`` with a few dozen mutants per path and one seed;
this runs the same module (its generator and its assertions, nothing copied) with
``FUZZ_EXAMPLES`` and ``FUZZ_SEED`` set, seed after seed, until ``--seconds`` are spent (or
once, without it), under the tests' own embedded PostgreSQL and Redis. It stops at the first
seed that fails and prints how to run that seed again.

    .venv/bin/python bench/fuzz_uploads.py --count 400 --seconds 600
    .venv/bin/python bench/fuzz_uploads.py --seed 1234 --count 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Beside the tests' own servers (the Makefile's TEST_DATA_DIR), never the dev site's.
DATA_DIR = Path(os.environ.get("IMAGEREC_DATA_DIR") or PROJECT_DIR / ".devdata") / "bench-fuzz"


def run_seed(seed: int, count: int) -> int:
    environment = {**os.environ, "FUZZ_SEED": str(seed), "FUZZ_EXAMPLES": str(count)}
    command = [sys.executable, "-m", "pytest", "tests/test_upload_fuzz.py", "-q", "-x",
               "-p", "no:cacheprovider", "--disable-warnings"]
    return subprocess.run(command, cwd=PROJECT_DIR, env=environment, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="the first seed; each further run takes the next one")
    parser.add_argument("--count", type=int, default=400, help="mutants per upload path (the suite uses 40)")
    parser.add_argument("--seconds", type=float, default=0, help="keep going with new seeds this long (0: one run)")
    arguments = parser.parse_args()

    if not os.environ.get("DATABASE_URL"):
        # The tests need their servers: run this script again under them, and stop them after.
        command = [sys.executable, "-m", "devtools.services", "run", "--data-dir", str(DATA_DIR), "--",
                   sys.executable, *sys.argv]
        return subprocess.run(command, cwd=PROJECT_DIR, check=False).returncode

    deadline = time.monotonic() + arguments.seconds
    seed = arguments.seed
    while True:
        started = time.monotonic()
        status = run_seed(seed, arguments.count)
        print(f"seed {seed}: {arguments.count} mutants per path, {time.monotonic() - started:.0f} s, "
              f"{'passed' if status == 0 else 'FAILED'}", flush=True)
        if status != 0:
            print(f"again: .venv/bin/python bench/fuzz_uploads.py --seed {seed} --count {arguments.count}")
            return status
        seed += 1
        if time.monotonic() >= deadline:
            return 0


if __name__ == "__main__":
    sys.exit(main())
