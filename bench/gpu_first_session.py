"""The first session on a lent GPU: every check it needs, in one command, in under 10 minutes.

    python bench/gpu_first_session.py --out "$OUT"            # on the GPU machine (docs/ingestion.md)
    python bench/gpu_first_session.py --device cpu --images 8 --out /tmp/s   # the same steps here
    python bench/gpu_first_session.py --apply /path/to/first-session.md       # back here: into the docs

In this order, each step with its own time limit, a failed step noted and the next one run,
so that a slow or broken step does not cost the figures of the others:

1. decoder: one 64-photo batch (3000x2000, ``--decode-size``) through the GPU decode path (``prepare_jpegs``,
   as bench/gpu.py's bare decode), timed three times after a set-up call; whether
   torchvision's ``decode_jpeg`` on the device refuses, and why;
2. device tests: tests/similarity/encoders/test_gpu.py and the other device tests, with their
   own embedded PostgreSQL and Redis (``devtools.services run``), as ``make test`` runs them;
3. vectors: the device path's vectors against the CPU worker's (Pillow, CPU encoder, fp32)
   for photos of 320x240, 640x480 and 3000x2000: lowest and mean cosine, per size;
4. benchmark: ``bench/gpu.py`` on ``--images`` photos of 3000x2000.

The figures go to ``--out`` as first-session.json and first-session.md (the section for
docs/ingestion.md); ``--apply`` writes that section into docs/ingestion.md between its markers.
Random ResNet18 weights throughout (the machine has no network; the forward pass costs the same).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import gpu  # noqa: E402  (bench/gpu.py: its photos and its bare decode, not copies of them)

DOCS = ROOT / "docs" / "ingestion.md"
BEGIN = "<!-- gpu-first-session:begin -->"
END = "<!-- gpu-first-session:end -->"
DEVICE_TESTS = ("tests/similarity/encoders/test_gpu.py",)
VECTOR_SIZES = ((320, 240), (640, 480), (3000, 2000))
DECODE_BATCH = 64


def step(results: dict, name: str, function, *args) -> None:
    """Run one step; its figures or its failure go into results, with its wall time."""
    started = time.perf_counter()
    gpu.log(f"[{name}] ...")
    try:
        results[name] = function(*args)
    except Exception as error:  # noqa: BLE001  (the next steps still run; the error is reported)
        traceback.print_exc()
        results[name] = {"error": f"{type(error).__name__}: {error}"}
    results[name]["seconds"] = round(time.perf_counter() - started, 1)
    gpu.log(f"[{name}] {json.dumps(results[name])[:400]}")


def django_setup(args, urls: dict[str, str]) -> None:
    os.environ.update(
        urls,
        DJANGO_SETTINGS_MODULE="imagerec.settings.local",
        IMAGEREC_DATA_DIR=str(args.data_dir),
        EMBEDDING_WEIGHTS="random",
        EMBEDDING_DEVICE=args.device,
    )
    import django

    django.setup()


def decoder(args) -> dict:
    import PIL
    import torch
    import torchvision
    from torchvision.io import decode_jpeg

    from similarity.encoders.registry import get_encoder

    width, height = (int(side) for side in args.decode_size.split("x"))
    photos = gpu.photos_ensure(
        args.data_dir / f"photos-{args.decode_size}", DECODE_BATCH, (width, height), args.processes
    )
    encoder = get_encoder(device=args.device)
    figures = {"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__}
    if args.device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name(args.device)
    # decode_jpeg itself, so that a refusal shows its own message rather than the worker's fallback.
    data = [torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8) for path in photos[:4]]
    try:
        decode_jpeg(data, device=args.device)
        figures["decode_jpeg"] = "ok"
    except RuntimeError as error:
        figures["decode_jpeg"] = f"refused: {error}"
    bare = gpu.bare_device_decode(encoder, photos, DECODE_BATCH, passes=3)
    figures.update(
        size=args.decode_size,
        batch=DECODE_BATCH,
        rate=bare["rate"],
        batch_ms=[1000 * DECODE_BATCH / rate for rate in bare["rates"]],
    )
    return figures


def device_tests(args) -> dict:
    tests = [path for path in DEVICE_TESTS if (ROOT / path).exists()]
    command = [
        sys.executable, "-m", "devtools.services", "run", "--data-dir", str(args.data_dir / "tests"), "--",
        sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-p", "pytest_django.plugin",
    ]  # fmt: skip
    # The tests choose their own settings and devices: the environment this script started with.
    # Only pytest-django is loaded: the GPU machine's own pytest plugins were not made for the
    # pytest carried with the wheels.
    environment = {
        **args.environment, "IMAGEREC_DATA_DIR": str(args.data_dir / "tests"), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }  # fmt: skip
    completed = subprocess.run(
        command, check=False, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=args.tests_timeout
    )
    print(completed.stdout[-4000:], completed.stderr[-2000:], sep="\n")
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    return {"tests": tests, "exit_status": completed.returncode, "summary": lines[-1] if lines else ""}


def vectors(args) -> dict:
    import numpy as np

    from similarity.compute import embeddings_compute
    from similarity.encoders.registry import get_encoder

    cpu = get_encoder(device="cpu")
    device = get_encoder(device=args.device)
    figures = {}
    for width, height in VECTOR_SIZES:
        photos = gpu.photos_ensure(
            args.data_dir / f"photos-{width}x{height}", args.vector_photos, (width, height), args.processes
        )
        sources = [(index, lambda path=path: path.open("rb")) for index, path in enumerate(photos)]
        found = {}
        for label, encoder, on_device in (("cpu", cpu, False), ("device", device, True)):
            found[label] = {}
            for batch in embeddings_compute(
                sources=sources, batch_size=len(sources), decode_on_device=on_device, encoder=encoder
            ):
                if batch.failures:
                    raise RuntimeError(f"{label} failed {batch.failures}")
                found[label].update(batch.vectors)
        cosines = []
        for key, reference in found["cpu"].items():
            other = found["device"][key]
            cosines.append(float(np.dot(reference, other) / (np.linalg.norm(reference) * np.linalg.norm(other))))
        figures[f"{width}x{height}"] = {
            "photos": len(cosines),
            "lowest": min(cosines),
            "mean": sum(cosines) / len(cosines),
        }
    return figures


def benchmark(args) -> dict:
    path = args.out / "bench-gpu.json"
    command = [
        sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", args.device, "--images", str(args.images),
        "--size", args.size, "--data-dir", str(args.data_dir / "bench"), "--json", str(path),
    ]  # fmt: skip
    if args.processes:
        command += ["--processes", str(args.processes)]
    # The photos the decoder step made are the benchmark's first ones (same names, same folder).
    (args.data_dir / "bench").mkdir(parents=True, exist_ok=True)
    shared = args.data_dir / "bench" / f"photos-{args.size}"
    if not shared.exists() and (args.data_dir / f"photos-{args.size}").exists():
        shared.symlink_to(args.data_dir / f"photos-{args.size}")
    completed = subprocess.run(
        command, check=False, cwd=ROOT, timeout=args.bench_timeout, capture_output=True, text=True
    )
    print(completed.stdout[-4000:], completed.stderr[-3000:], sep="\n")
    if completed.returncode:
        raise RuntimeError(f"bench/gpu.py exited with {completed.returncode}")
    run = json.loads(path.read_text())
    return {"summary": gpu.summary(run)}


def section(results: dict, args) -> str:
    """The figures as docs/ingestion.md's section, between the markers --apply looks for."""
    lines = [BEGIN, f"#### First GPU session, {results['when']} (`bench/gpu_first_session.py`)", ""]
    decode = results.get("decoder", {})
    if "error" in decode:
        lines.append(f"- Decoder: failed: {decode['error']}")
    else:
        lines.append(
            f"- Decoder on {decode.get('gpu', args.device)} (torch {decode['torch']}, torchvision {decode['torchvision']}, "
            f"Pillow {decode['pillow']}): "
            f"`decode_jpeg` on the device {decode['decode_jpeg']}; one batch of {decode['batch']} photos of {decode['size']} "
            f"in {min(decode['batch_ms']):.0f} ms ({decode['rate']:,.0f} images/s)."
        )
    tests = results.get("device_tests", {})
    outcome = tests.get("error") or f"{tests.get('summary', '')} (exit status {tests.get('exit_status')})"
    outcome = outcome if tests else "not run"
    lines.append(f"- Device tests ({', '.join(tests.get('tests', DEVICE_TESTS))}): {outcome}")
    compared = results.get("vectors", {})
    if not compared:
        lines.append("- Device vectors against the CPU worker's: not run")
    elif "error" in compared:
        lines.append(f"- Device vectors against the CPU worker's: failed: {compared['error']}")
    else:
        found = "; ".join(
            f"{size}: lowest {figures['lowest']:.5f}, mean {figures['mean']:.5f} ({figures['photos']} photos)"
            for size, figures in compared.items()
            if isinstance(figures, dict)
        )
        lines.append(f"- Device vectors against the CPU worker's, cosine: {found}.")
    bench = results.get("benchmark", {})
    lines += ["", "```", bench.get("summary") or f"bench/gpu.py: {bench.get('error', 'not run')}", "```"]
    timings = ", ".join(
        f"{name} {figures['seconds']:.0f} s" for name, figures in results.items() if isinstance(figures, dict)
    )
    lines += ["", f"Wall time per step: {timings}.", END]
    return "\n".join(lines) + "\n"


def apply(section_path: Path, docs: Path = DOCS) -> None:
    """Put a session's section into the docs in place of the previous one (or at the GPU section's end)."""
    text, new = docs.read_text(), section_path.read_text().strip() + "\n"
    if BEGIN in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        docs.write_text(before + new + ("\n" + after if after else ""))
    else:
        docs.write_text(text.rstrip("\n") + "\n\n" + new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=1024, help="photos for bench/gpu.py (default 1024)")
    parser.add_argument("--size", default="3000x2000", help="bench/gpu.py's photo size")
    parser.add_argument("--decode-size", default="3000x2000", help="photo size for the decoder's batch")
    parser.add_argument("--vector-photos", type=int, default=16, help="photos per size for the vector comparison")
    parser.add_argument("--processes", type=int, default=0, help="photo and upload processes (default: CPUs)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".devdata" / "gpu-first-session")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--tests-timeout", type=int, default=150)
    parser.add_argument("--bench-timeout", type=int, default=300)
    parser.add_argument(
        "--apply", type=Path, help="a session's first-session.md: write it into docs/ingestion.md and stop"
    )
    args = parser.parse_args()
    if args.apply:
        apply(args.apply)
        return 0
    args.data_dir, args.out = args.data_dir.resolve(), args.out.resolve()
    args.environment = dict(os.environ)
    args.processes = args.processes or len(os.sched_getaffinity(0))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "device": args.device}
    from devtools import services

    # The settings want a database and a broker, though only the device tests and the
    # benchmark (each with servers of its own) use them.
    given = {key: args.environment.get(key, "") for key in ("DATABASE_URL", "CELERY_BROKER_URL")}
    urls, started_services = services.services_start(args.data_dir / "servers", given=given)
    try:
        django_setup(args, {**given, **urls})
        for name, function in (
            ("decoder", decoder),
            ("device_tests", device_tests),
            ("vectors", vectors),
            ("benchmark", benchmark),
        ):
            step(results, name, function, args)
            # After each step: a run cut off at its time limit still brings back what it measured.
            results["seconds"] = round(time.perf_counter() - started, 1)
            (args.out / "first-session.json").write_text(json.dumps(results, indent=2))
            (args.out / "first-session.md").write_text(section(results, args))
    finally:
        services.services_stop(args.data_dir / "servers", started_services)
    print(section(results, args))
    failed = [name for name in ("decoder", "vectors", "benchmark") if "error" in results[name]]
    failed += ["device_tests"] if results["device_tests"].get("exit_status") else []
    gpu.log(f"Done in {results['seconds']:.0f} s; failed steps: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
