"""The streaming safetensors reader/writer, measured in a child process: peak memory stays near one tensor."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from tasks.families.converters.safetensors_stream import Planned, open_checkpoint, write_safetensors

    def rss_kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])

    folder, count, rows = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.ones(rows, 1024).sum()  # warm torch's allocator up before the baseline
    base = rss_kib("VmRSS:")
    plan = [Planned(f"t{i}", (rows, 1024), torch.float32, lambda i=i: torch.full((rows, 1024), float(i))) for i in range(count)]
    write_safetensors(folder / "model.safetensors", plan)
    with open_checkpoint(folder, "probe") as ckpt:
        total = sum(float(ckpt.load(f"t{i}")[0, 0]) for i in range(count))
    assert total == sum(range(count))
    print((rss_kib("VmHWM:") - base) // 1024)
    """
)


def test_streaming_peak_memory_is_about_one_tensor(tmp_path: Path) -> None:
    """Write then read 24 tensors of 16 MB (384 MB): the child's peak RSS grows by about one tensor, not the file.

    A fixed malloc mmap threshold makes every tensor buffer its own mapping, returned to the
    system when freed; glibc's adaptive default may keep a few freed tensors cached in its heap,
    which is the allocator's choice (bounded, not growing with the file), not memory the code holds.
    """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    argv = [sys.executable, "-c", MEMORY_PROBE, str(tmp_path), "24", "4096"]
    run = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=True, timeout=120)
    growth_mb = int(run.stdout.strip())
    assert growth_mb < 3 * 16, f"peak RSS grew by {growth_mb} MB while streaming 384 MB in 16 MB tensors"
