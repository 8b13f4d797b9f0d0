"""Publishing a built model to the S3 store with doit, as the publish tests of every tier that runs doit do."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import doit_env, run_doit
from tests.s3server import SECRET_KEY, S3Server

SERVE_LINE = re.compile(r"--model-repository=(\S+)")


def store_env(server: S3Server, path_prefix: Path | None = None) -> dict[str, str]:
    return doit_env({**server.env(), "TRITONGRAPH_CACHE": server.url}, path_prefix)


def publish_model(project: Path, server: S3Server, model: str, *args: str, path_prefix: Path | None = None) -> str:
    result = run_doit(project, f"publish:{model}", *args, env=store_env(server, path_prefix))
    assert result.rc == 0, result.stdout + result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr
    (url,) = SERVE_LINE.findall(result.stdout)
    return str(url)
