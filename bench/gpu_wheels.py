"""The wheels a GPU machine needs to run the worker and bench/gpu.py, derived from requirements.txt.

    python bench/gpu_wheels.py --dest .whl          # Python 3.12 on x86-64 Linux: the lent GPU machine
    python bench/gpu_wheels.py --dest DIR --here    # this interpreter (tests/bench/test_gpu_wheels.py)
    python bench/gpu_wheels.py --list               # the pins taken from requirements.txt

A GPU machine brings PyTorch, torchvision, NumPy and Pillow built for its CUDA (and the
nvidia-* libraries they load); it has no network, so everything else the worker imports
travels as wheels. Every pin of requirements.txt is taken except those and the ones marked
with a trailing ``# tests-only`` (the test tools), ``# not-in-worker`` (the web server, the
dev runner, the demo photos) or ``# s3-only`` (media in object storage, which the benchmark does
not use: a GPU worker of a site with ``MEDIA_STORAGE=s3`` installs requirements.txt); pytest and
pytest-django are taken all the same, for the device tests the first GPU session runs. A new
dependency of the site is therefore carried without anyone remembering this list; the
environment test (tests/bench/test_gpu_wheels.py) fails if one is missed.

Dependencies of the pins are resolved by pip for the target interpreter, at the versions this
environment has installed (as constraints), so the GPU machine runs the versions the test
suite ran with. The wheels and ``wheels.txt`` (name==version, one a line) go to ``--dest``;
wheels already there are kept, others removed, so a folder can be refreshed in place.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"

# Installed on the GPU machine with its CUDA build: a PyPI wheel would replace the CUDA one.
GPU_MACHINE_BRINGS = frozenset({"torch", "torchvision", "numpy", "pillow", "triton"})
# Marked tests-only, but the first GPU session runs the device tests (bench/gpu_first_session.py).
DEVICE_TEST_RUNNER = frozenset({"pytest", "pytest-django"})
# botocore alone is 17 MB of the 64 MiB a device call carries; the benchmark's media are on local disk.
LEAVE_OUT_MARKERS = ("# tests-only", "# not-in-worker", "# s3-only")

# The lent GPU machine's interpreter and platform (docs/ingestion.md, "GPU worker").
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def brought_by_gpu_machine(name: str) -> bool:
    name = canonical(name)
    return name in GPU_MACHINE_BRINGS or name.startswith("nvidia-")


def worker_pins(requirements: Path = REQUIREMENTS) -> list[str]:
    """requirements.txt's pins the worker and the device tests need that the GPU machine does not have."""
    pins = []
    for line in requirements.read_text().splitlines():
        requirement = line.partition("#")[0]
        requirement = requirement.strip()
        if not requirement:
            continue
        name = canonical(re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0])
        left_out = any(line.rstrip().endswith(marker) for marker in LEAVE_OUT_MARKERS)
        if (not left_out or name in DEVICE_TEST_RUNNER) and not brought_by_gpu_machine(name):
            pins.append(requirement)
    return pins


def installed_versions() -> list[str]:
    """This environment's distributions as constraints: the versions the test suite runs."""
    versions = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and not brought_by_gpu_machine(name):
            versions[canonical(name)] = distribution.version
    return [f"{name}=={version}" for name, version in sorted(versions.items())]


def target_options(here: bool) -> list[str]:
    if here:
        return ["--only-binary=:all:"]
    platforms = [option for platform in GPU_PLATFORMS for option in ("--platform", platform)]
    return ["--only-binary=:all:", "--python-version", GPU_PYTHON, "--implementation", "cp", *platforms]


def resolve(pins: list[str], *, here: bool) -> list[str]:
    """name==version of every wheel the pins need on the target, the GPU machine's own left out."""
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(installed_versions()) + "\n")
        report = Path(folder) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), "--target", str(Path(folder) / "target"),
             *target_options(here), "-c", str(constraints), *pins],
            check=True,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    resolved = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    return [f"{name}=={version}" for name, version in sorted(resolved.items()) if not brought_by_gpu_machine(name)]


def wheel_pin(path: Path) -> str:
    name, version = path.name.split("-")[:2]
    return f"{canonical(name)}=={version}"


def download(dest: Path, *, here: bool = False) -> list[str]:
    """Resolve and download into dest; returns the name==version list written to dest/wheels.txt."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = resolve(worker_pins(), here=here)
    for stale in dest.glob("*.whl"):
        if wheel_pin(stale) not in wanted:
            stale.unlink()
    have = {wheel_pin(path) for path in dest.glob("*.whl")}
    missing = [pin for pin in wanted if pin not in have]
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *target_options(here),
             "--dest", str(dest), *missing],
            check=True,
        )  # fmt: skip
    (dest / "wheels.txt").write_text("\n".join(wanted) + "\n")
    return wanted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="folder for the wheels (default .whl)")
    parser.add_argument("--here", action="store_true", help="for this interpreter, not the GPU machine's 3.12")
    parser.add_argument("--list", action="store_true", help="print the pins taken from requirements.txt and stop")
    args = parser.parse_args()
    if args.list:
        print("\n".join(worker_pins()))
        return 0
    wanted = download(args.dest, here=args.here)
    size = sum(path.stat().st_size for path in args.dest.glob("*.whl"))
    print(f"{len(wanted)} wheels, {size / 2**20:.1f} MiB, in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
