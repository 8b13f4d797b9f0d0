"""serve: run Triton on ``repos/<model>`` in the foreground until Ctrl-C.

The repository is brought up to date first (``task_dep`` on ``repo:<model>``);
the project lock is then released so other builds can run while the server is up
(a rebuilt repository is swapped in atomically under the running server; ``reload=on``,
the default, loads what changed into the running server, ``reload=off`` only says so).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from doit import get_var
from doit.exceptions import TaskFailed

from tasks.commands.promote import promoted_ranks
from tasks.commands.reload import RepoWatch, parse_reload
from tasks.core import interrupts, lock
from tasks.core.errors import UserError
from tasks.spec.sources import server_ranks
from tasks.stages.graph import BUILD, REPOS, Graph

log = logging.getLogger(__name__)

_POLL_S = 0.2
_WATCH_EVERY = 5  # polls: the repository is checked once a second
DEFAULT_PORTS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}


def parse_port(name: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:  # noqa: PLR2004 - TCP port range
        raise UserError(name, f"expected a TCP port number, got {value!r}")
    return int(value)


def serve(model: str, target: str, address: str, ports: dict[str, str], ranks: dict[str, Any]) -> TaskFailed | None:
    """Doit action: start the server, print where it listens, stop it cleanly on Ctrl-C."""
    from tasks.triton.argv import Ports  # noqa: PLC0415 - only serve needs them
    from tasks.triton.launcher import TritonServer  # noqa: PLC0415
    from tasks.triton.processes import check_address  # noqa: PLC0415
    from tasks.triton.ranks import Ranks  # noqa: PLC0415

    try:
        numbers = {name: parse_port(name, value) for name, value in ports.items()}
        check_address(address)
        watch = RepoWatch(REPOS / model, reload=parse_reload(get_var("reload", "on") or "on"))
        server = TritonServer(
            REPOS / model,
            target,
            BUILD / model / "logs" / "serve-tritonserver.log",
            ports=Ports(numbers["http_port"], numbers["grpc_port"], numbers["metrics_port"]),
            address=address,
            ranks=Ranks.from_params(ranks),
            model_control="explicit",
        )
    except UserError as exc:
        return TaskFailed(str(exc))
    lock.release()
    try:
        server.start()
        interrupts.raise_if_interrupted()
    except UserError as exc:
        return TaskFailed(str(exc))
    except KeyboardInterrupt:
        # Ctrl-C before "ready" is a stop like any other.
        server.stop()
        log.info("serve: interrupted while starting; stopped")
        return None
    log.info(
        "serve: %s ready - HTTP %s, gRPC %s, metrics %s:%d (Ctrl-C stops)",
        model,
        server.http_url,
        server.grpc_url,
        address,
        numbers["metrics_port"],
    )
    try:
        # Polled, not a blocking wait: a Ctrl-C whose KeyboardInterrupt Python dropped
        # (see interrupts.raise_if_interrupted) must still stop the server.
        polls = 0
        while not server.exited():
            time.sleep(_POLL_S)
            interrupts.raise_if_interrupted()
            polls += 1
            if polls % _WATCH_EVERY == 0:
                watch.check(server.http_url)
        code = server.stop()
    except KeyboardInterrupt:
        log.info("serve: stopping")
        code = server.stop()
        log.info("serve: stopped (exit code %d)", code)
        return None
    return TaskFailed(f"tritonserver exited with status {code}; log: {server.log_path}") if code else None


def serve_promoted(model: str, target: str, address: str, ports: dict[str, str]) -> TaskFailed | None:
    """Doit action for a swept model: serve whichever variant was promoted."""
    try:
        ranks = promoted_ranks(model)
    except UserError as exc:
        return TaskFailed(str(exc))
    return serve(model, target, address, ports, ranks)


def _task(name: str, action: tuple[Any, list[Any]], task_dep: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "doc": f"run Triton on repos/{name} (vars: address, http_port, grpc_port, metrics_port, reload)",
        "actions": [action],
        "task_dep": task_dep,
        "uptodate": [False],
        "verbosity": 2,
    }


def serve_tasks(graph: Graph, address: str, ports: dict[str, str]) -> list[dict[str, Any]]:
    """``serve:<m>`` for every model, and ``serve:<m>@...`` for each variant of a sweep.

    A swept model's ``repos/<m>`` is built by ``promote`` only, so its serve task builds nothing.
    """
    target = graph.target.name
    tasks = []
    for spec in graph.specs:
        if not spec.variants:
            action = (serve, [spec.name, target, address, ports, server_ranks(spec)])
            tasks.append(_task(spec.name, action, [graph.stage_of("repo", spec.name).task_name]))
            continue
        tasks.append(_task(spec.name, (serve_promoted, [spec.name, target, address, ports]), []))
        for variant in spec.variants:
            action = (serve, [variant.variant, target, address, ports, server_ranks(variant)])
            tasks.append(_task(variant.variant, action, [graph.stage_of("repo", variant.variant).task_name]))
    return tasks
