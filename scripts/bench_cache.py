# ruff: noqa: T201, INP001 - a measurement script run by path: its printed lines are the report
"""Measure the artifact cache against a local SeaweedFS S3 server, all ratios from one run.

    python scripts/bench_cache.py [--sizes-gb 1 5] [--skip-minilm]

1. Restore of an engine-sized output (one file of N GB) through the cache protocol
   (entry lookup, streamed download with sha256 checked, atomic publish) against a raw
   obstore get of the same object to a file, in the same run, alternating, medians of 3.
2. MiniLM on target cpu: checkout A's cold build (cache_mode=rw) vs checkout B's full-hit
   build from the cache (another path, empty build/).
3. No-op ``doit build`` in A with and without a cache configured (medians of 5).

Everything lives in a temp dir on the project's disk that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import obstore  # noqa: E402

from tasks.core import cache, hashing  # noqa: E402
from tasks.core.stage import Stage, StageContext, action_key, input_digests  # noqa: E402
from tasks.core.store import Store  # noqa: E402
from tests.helpers import copy_project, doit_env, run_doit  # noqa: E402
from tests.s3server import S3Server, running_s3  # noqa: E402

_CHUNK = 64 << 20


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(_CHUNK)  # one random block, each copy made distinct by a counter: no dedup, cheap to write
    with path.open("wb") as handle:
        for i in range(size // _CHUNK):
            handle.write(i.to_bytes(8, "little") + block[8:])


def _median_seconds(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.monotonic()
        run()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def _unused(_: StageContext) -> None:
    raise RuntimeError("the benchmark only restores")


def bench_restore(server: S3Server, tmp: Path, size_gb: float) -> None:
    size = int(size_gb * (1 << 30))
    url = f"{server.url}/bench-{size_gb}"
    store = Store(url)
    src = tmp / "engine.plan"
    _write_random(src, size)
    digest = hashing.sha256_file(src)
    store.put_file(f"cas/{digest}", src)
    src.unlink()
    os.chdir(tmp)
    hashing.configure(tmp / "digests.sqlite")
    cache.configure(cache.Settings(url, "ro"))
    stage = Stage("engine", "big", {"size": size}, Path("build/big/engine"), _unused, "bench", cached=True)
    key = action_key(stage, input_digests(stage))
    files = {"engine.plan": {"size": size, "sha256": digest}}
    entry = {"manifest": {"stage": "engine", "model": "big", "target": "any", "files": files, "empty_dirs": []}, "record": {}}
    store.put_if_absent(f"ac/{key}", json.dumps(entry).encode())
    raw_store = obstore.store.from_url(url, client_options={"allow_http": True})
    work = tmp / "work"

    def raw() -> None:
        with (tmp / "raw.bin").open("wb") as handle:
            for chunk in obstore.get(raw_store, f"cas/{digest}").stream(min_chunk_size=8 << 20):
                handle.write(memoryview(chunk))
        (tmp / "raw.bin").unlink()

    def restore() -> None:
        work.mkdir(parents=True, exist_ok=True)
        if cache.restore(stage, key, work) is None:
            raise SystemExit("restore missed: see the warning above")
        (work / "engine.plan").unlink()

    raws, restores = [], []
    for _ in range(3):
        raws.append(_median_seconds(raw, 1))
        restores.append(_median_seconds(restore, 1))
    raw_s, restore_s = statistics.median(raws), statistics.median(restores)
    mb = size / 1e6
    print(
        f"restore {size_gb:g} GB: raw obstore get {mb / raw_s:.0f} MB/s, cache restore (sha256 checked) {mb / restore_s:.0f} MB/s"
        f" -> {raw_s / restore_s:.0%} of raw"
    )
    store.delete(f"cas/{digest}")
    store.delete(f"ac/{key}")
    os.chdir(ROOT)


def bench_minilm(server: S3Server, tmp: Path) -> None:
    text = (ROOT / "models/minilm.yaml").read_text()
    models = {"minilm": text[: text.index("\nbench:")] + "\n"}
    a = copy_project(tmp / "a", models)
    b = copy_project(tmp / "elsewhere" / "b", models)
    url = f"{server.url}/minilm"
    cached = doit_env({**server.env(), cache.URL_ENV: url, cache.MODE_ENV: "rw"})
    plain = doit_env()

    def build(project: Path, env: dict[str, str]) -> float:
        started = time.monotonic()
        result = run_doit(project, "build", "target=cpu", env=env)
        if result.rc != 0:
            raise SystemExit(result.stdout + result.stderr)
        return time.monotonic() - started

    cold = build(a, cached)
    hit = build(b, {**cached, cache.MODE_ENV: "ro"})
    print(f"minilm cpu: cold build (A, rw) {cold:.1f} s, full-hit build (B, other path) {hit:.1f} s -> {hit / cold:.0%} of cold")
    with_cache, without = [], []
    for _ in range(5):
        with_cache.append(build(a, cached))
        without.append(build(a, plain))
    print(f"no-op doit build: with cache {statistics.median(with_cache):.2f} s, without {statistics.median(without):.2f} s (medians of 5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="*", default=[1.0, 5.0])
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "build" if (ROOT / "build").is_dir() else None) as tmp_name:
        tmp = Path(tmp_name)
        with running_s3(tmp / "weed") as server:
            os.environ.update(server.env())
            for size in args.sizes_gb:
                bench_restore(server, tmp, size)
            if not args.skip_minilm:
                bench_minilm(server, tmp)


if __name__ == "__main__":
    main()
