"""Stand-ins for launching servers: a recording executable, and the toolchain an engine was built with."""

from __future__ import annotations

# Records its argv as one JSON line in $FAKE_ARGV_LOG, then fails as a server that never became ready.
RECORDER = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_ARGV_LOG"], "a") as log:
    log.write(json.dumps(sys.argv) + "\\n")
sys.exit(1)
"""

BUILT = {"tensorrt_llm": "1.2.1", "tensorrt": "10.14.1", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
