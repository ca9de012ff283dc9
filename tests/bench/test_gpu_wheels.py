"""A lent GPU machine has PyTorch, torchvision, NumPy and Pillow, no network, and 15 minutes.

Everything else the worker and the first session import travels as the wheels
bench/gpu_wheels.py derives from requirements.txt. Here a fresh virtual environment gets exactly
those wheels (for this Python), installed from the local folder only, and this environment's
torch, torchvision, NumPy and Pillow (and what they need) as the machine's own, through a
``.pth`` file; then the site's settings, the worker's checks and the first session's script,
benchmark included, run in it on the CPU. A dependency missing from the wheels fails here
rather than in the first minutes of a GPU session.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from django.conf import settings
from packaging.requirements import Requirement

pytestmark = pytest.mark.end_to_end

ROOT = Path(__file__).resolve().parents[2]
GPU_MACHINE_OWN = ("torch", "torchvision", "numpy", "pillow")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_machine_distributions() -> list[importlib.metadata.Distribution]:
    """torch, torchvision, NumPy, Pillow and everything they require, as installed here."""
    found, waiting = {}, list(GPU_MACHINE_OWN)
    while waiting:
        name = canonical(waiting.pop())
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform
        found[name] = distribution
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                waiting.append(requirement.name)
    return list(found.values())


def link_gpu_machine_packages(folder: Path) -> None:
    """Symbolic links to their top-level folders and modules: torch is gigabytes, not copied."""
    folder.mkdir()
    for distribution in gpu_machine_distributions():
        tops = {Path(str(file)).parts[0] for file in distribution.files or [] if not str(file).startswith("..")}
        for top in tops - {"__pycache__"}:
            target = Path(distribution.locate_file(top))
            if target.exists() and not (folder / top).exists():
                (folder / top).symlink_to(target)


def clean_environment(venv: Path, data_dir: Path) -> dict[str, str]:
    """No pip configuration (no index, no other wheel folder), no servers of the test run's."""
    left_out = ("VIRTUAL_ENV", "PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL")
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("PIP_") and key not in left_out
    }
    environment.update(
        PIP_CONFIG_FILE=os.devnull,
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        IMAGEREC_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    return environment


def run(command: list[str], environment: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        command, check=False, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
    return completed


@pytest.fixture(scope="module")
def gpu_environment() -> tuple[Path, dict[str, str]]:
    """A fresh environment: the derived wheels plus the GPU machine's own packages."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # Downloaded once (the CI machine reaches PyPI); later runs only resolve and reuse them.
    wheels = Path(settings.TEST_DATA_DIR) / "gpu-wheels" / f"python{version}"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_wheels.py"), "--here", "--dest", str(wheels)],
        cwd=ROOT, check=True, timeout=600,
    )  # fmt: skip
    # Under the session's folder (removed when the session ends), not pytest's temporary ones,
    # which a concurrent pytest run may prune while the benchmark still runs from them.
    base = Path(settings.TEST_SESSION_DIR) / "gpu-machine"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    link_gpu_machine_packages(base / "own-packages")
    site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site_packages / "gpu-machine-own-packages.pth").write_text(f"{base / 'own-packages'}\n")
    environment = clean_environment(venv, base / "data")
    python = str(venv / "bin" / "python")
    run(
        [python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
         "-r", str(wheels / "wheels.txt")],
        environment, timeout=300,
    )  # fmt: skip
    return venv, environment


def test_the_settings_load_and_the_workers_checks_pass_with_only_the_gpu_wheels(gpu_environment):
    venv, environment = gpu_environment
    python = str(venv / "bin" / "python")
    # Nothing of this checkout's .venv but the GPU machine's own packages can be reached.
    probe = run(
        [python, "-c", "import django, torch, sys; print(django.__file__, torch.__file__, sys.prefix)"], environment, 60
    )
    django_file, torch_file, prefix = probe.stdout.split()
    assert Path(prefix) == venv and Path(django_file).is_relative_to(venv), probe.stdout
    assert Path(torch_file).is_relative_to(venv.parent / "own-packages"), probe.stdout
    # The worker runs the same checks at start-up (Celery's Django fix-up); they load the URLconf,
    # and so the API's schema views, as well as every app in INSTALLED_APPS and the logging config.
    checked = run(
        [python, "manage.py", "check", "--settings", "imagerec.settings.local"],
        {**environment, "DATABASE_URL": "postgres://unused@localhost/unused", "CELERY_BROKER_URL": "redis://localhost:1/0",
         "LOG_FORMAT": "json", "EMBEDDING_WEIGHTS": "random", "EMBEDDING_DEVICE": "cpu"},
        timeout=120,
    )  # fmt: skip
    assert "no issues" in checked.stdout


def test_the_first_gpu_session_runs_end_to_end_on_the_cpu_with_only_the_gpu_wheels(gpu_environment):
    """Its decoder check, the device tests, the vector comparison and bench/gpu.py, small."""
    venv, environment = gpu_environment
    folder = venv.parent / "first-session"
    completed = run(
        [str(venv / "bin" / "python"), "bench/gpu_first_session.py", "--device", "cpu", "--images", "8",
         "--size", "320x240", "--decode-size", "640x480", "--vector-photos", "2", "--processes", "2",
         "--data-dir", str(folder / "data"), "--out", str(folder / "out")],
        environment, timeout=600,
    )  # fmt: skip
    section = (folder / "out" / "first-session.md").read_text()
    assert "failed" not in section and "exit status 0" in section, completed.stdout[-6000:]
    assert "worker, deep queue, first claim to last embedding stored" in section
    for size in ("320x240", "640x480", "3000x2000"):
        assert f"{size}: lowest 0.99" in section, section
