"""Images normalized to WebP with a BlurHash: livefile's image jobs against the same Pillow
conversion in a plain script, in the same run, with 1 and 2 workers.

The input: 12-megapixel JPEGs (4000x3000, photo-like: gradients under noise), 8 distinct ones
made once per machine in the scratch directory and cycled to ``LIVEFILE_BENCH_IMAGES`` images
(200 by default; 10 with --quick). livefile: a server with ``--job-concurrency W``; every image
is uploaded first (not timed), then ``POST /resources/{id}/image`` for all of them at once and
the clock stops when the last WebP is COMPLETED. The baseline: a plain Python process
converting the same files with Pillow and blurhash directly (what livefile's conversion does:
EXIF orientation, WebP quality 80 method 4 with the ICC profile, and the BlurHash of a 64 px
thumbnail decoded at reduced scale) in W threads, reading and writing files on the same tmpfs.
Runs interleaved.

Reported: images per second for each W, and livefile's against the plain script's (target:
livefile's overhead at most 10 %, i.e. a ratio >= 0.9).

Run: LIVEFILE_BENCH_IMAGES=40 uv run python -m bench --only images [--runs 1] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.support import SCRATCH, Result, free_port, livefile_server, stop
from livefile.api.model import TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient

TARGET_RATIO = 0.9  # livefile's images/s over the plain script's: at most 10 % overhead
DISTINCT = 8
SIZE = (4000, 3000)
WORKERS = (1, 2)
WAIT = 3600.0


def make_photos(folder: Path) -> list[Path]:
    """``DISTINCT`` photo-like 12-megapixel JPEGs (made once)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for index in range(DISTINCT):
        path = folder / f"photo-{index}.jpg"
        if not path.exists():
            red = Image.linear_gradient("L").resize(SIZE).rotate(index * 40)
            green = Image.radial_gradient("L").resize(SIZE)
            noise = Image.effect_noise(SIZE, 24 + index * 4)
            blue = Image.blend(noise, red, 0.5)
            Image.merge("RGB", (red, green, blue)).save(path, "JPEG", quality=90)
        photos.append(path)
    return photos


def plain_conversion(path: Path, out: Path) -> str:
    """The same conversion as livefile's, written directly against Pillow and blurhash."""
    import blurhash  # type: ignore[import-untyped]
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        icc = image.info.get("icc_profile")
        shown = ImageOps.exif_transpose(image).convert("RGB")
    shown.save(out, "WEBP", quality=80, method=4, icc_profile=icc)
    with Image.open(path) as image:
        image.draft("RGB", (64, 64))
        thumb = ImageOps.exif_transpose(image).convert("RGB")
    thumb.thumbnail((64, 64), Image.Resampling.LANCZOS)
    width, height = thumb.size
    pixels = thumb.get_flattened_data()
    rows = [list(pixels[row * width : (row + 1) * width]) for row in range(height)]
    return str(blurhash.encode(rows, components_x=4, components_y=3))


def run_plain_script(files: list[Path], out: Path, workers: int) -> float:
    """Seconds for the plain script to convert ``files`` with ``workers`` threads."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "bench.images", str(workers), str(out), *map(str, files)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(done.stdout)["seconds"])


async def run_livefile(files: list[Path], work: Path, workers: int) -> float:
    """Seconds from the first POST /resources/{id}/image to the last COMPLETED WebP."""
    data_dir = work / "livefile-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(
        port, data_dir, "--job-concurrency", str(workers), "--job-queue", str(len(files)),
        "--no-durable",
    )  # fmt: skip
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=WAIT) as client:
            references = [(await client.upload_file(path)).reference for path in files]
            started = time.monotonic()
            derived = [await client.image(reference) for reference in references]
            ends = await asyncio.gather(*(wait_for_end(d.reference.uri) for d in derived))
            elapsed = time.monotonic() - started
        assert all(end is TransferStatus.COMPLETED for end in ends), ends
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    return elapsed


async def wait_for_end(reference: str) -> TransferStatus:
    async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
        return (await watcher.wait_for_end(WAIT)).transfer_status


async def measure(runs: int, quick: bool) -> list[Result]:
    count = int(os.environ.get("LIVEFILE_BENCH_IMAGES", "10" if quick else "200"))
    work = SCRATCH / "images"
    photos = await asyncio.to_thread(make_photos, work / "photos")
    files = [photos[index % DISTINCT] for index in range(count)]
    results = []
    for workers in WORKERS:
        livefile_rates, plain_rates = [], []
        for _ in range(runs):  # interleaved: a slow spell of the machine hits both
            livefile_rates.append(count / await run_livefile(files, work, workers))
            seconds = await asyncio.to_thread(run_plain_script, files, work / "plain", workers)
            plain_rates.append(count / seconds)
        results.append(
            Result(
                benchmark=f"{count} JPEGs of 12 MP to WebP + BlurHash, {workers} worker(s)",
                subject=f"livefile: POST /resources/{{id}}/image, --job-concurrency {workers}",
                unit="images/s",
                runs=livefile_rates,
                baseline=f"the same Pillow conversion in a plain script, {workers} thread(s)",
                baseline_runs=plain_rates,
                target=TARGET_RATIO,
                target_text="overhead <= 10 % (ratio >= 0.9)",
            )
        )
    shutil.rmtree(work / "plain", ignore_errors=True)
    return results


def main(arguments: list[str]) -> None:
    """The plain script: ``python -m bench.images WORKERS OUT_DIR FILE...``; prints the
    seconds it took as JSON."""
    workers, out = int(arguments[0]), Path(arguments[1])
    files = [Path(name) for name in arguments[2:]]
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        hashes = list(
            pool.map(
                lambda item: plain_conversion(item[1], out / f"{item[0]}.webp"), enumerate(files)
            )
        )
    seconds = time.monotonic() - started
    print(json.dumps({"seconds": seconds, "images": len(hashes)}))


if __name__ == "__main__":
    main(sys.argv[1:])
