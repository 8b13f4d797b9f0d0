"""index: a corpus embedded by one member of an ensemble -> an on-disk vector index.

The member's Triton models (its config, engine and checkpoint outputs, hardlinked into a
private repository) run in a real Triton, and every corpus item goes through the member's
own ensemble: the path a query takes later, so corpus and queries are embedded by one model.

Output: ``embeddings.npy`` (float32 [N, D], rows L2-normalised, so an inner product is the
cosine similarity), ``items.json`` (the corpus lines, in row order) and ``index.json``.
The search is exact (one matrix product): fine for corpora that fit in memory; an
approximate index would be a different artifact.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import fsops, interrupts
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.spec import modelspec, sources
from tasks.stages import repo
from tasks.stages.bench import CPU_TOOLCHAIN as BENCH_CPU_TOOLCHAIN
from tasks.stages.graph import ModelGraph, member_stage, rel
from tasks.tools import toolchain, trtexec
from tasks.triton import layout

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CODE_VERSION = "1"
EMBEDDINGS, ITEMS, FACTS = layout.INDEX_FILES
_PROGRESS_S = 10.0


def payloads(items: Sequence[str], role: str, corpus: Path) -> list[bytes]:
    """What the member's ensemble receives: UTF-8 text, or an image file's bytes."""
    if role == "text":
        return [item.encode("utf-8") for item in items]
    return [sources.corpus_item_path(corpus, item).read_bytes() for item in items]


def batches(values: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _embed(url: str, model: str, role: str, values: Sequence[bytes], batch_size: int) -> np.ndarray[Any, Any]:
    import numpy as np  # noqa: PLC0415 - heavy; only a running index stage needs it
    import tritonclient.grpc as grpcclient  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    rows: list[np.ndarray[Any, Any]] = []
    shown = time.monotonic()
    with grpcclient.InferenceServerClient(url) as client:
        for batch in batches(values, batch_size):
            interrupts.raise_if_interrupted()
            tensor = grpcclient.InferInput(role, [len(batch), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[v] for v in batch], dtype=object))
            try:
                reply = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput("embedding")])
            except InferenceServerException as exc:
                raise UserError(f"index via {model}", f"item {len(rows) * batch_size + 1}..: {exc.message()}") from None
            rows.append(reply.as_numpy("embedding"))
            if time.monotonic() - shown > _PROGRESS_S:
                log.info("index: %d/%d items embedded", sum(len(r) for r in rows), len(values))
                shown = time.monotonic()
    vectors: np.ndarray[Any, Any] = np.concatenate(rows).astype(np.float32)
    return vectors


def action(ctx: StageContext) -> None:
    import numpy as np  # noqa: PLC0415

    from tasks.triton.launcher import TritonServer  # noqa: PLC0415 - starts processes; only this action needs it

    params, settings = ctx.params, ctx.params["index"]
    corpus, role, member = Path(params["corpus"]), settings["member"], params["member"]["name"]
    items = sources.read_corpus(corpus, modelspec.Where(str(corpus), "index.corpus"))
    values = payloads(items, role, corpus)
    serving = fsops.tmp_sibling(ctx.stage.out_dir.parent / "index-serving")
    fsops.remove_stale_tmp(serving)
    try:
        repo.link_member(params["member"], ctx.inputs, params["target"], serving)
        log.info("index: embedding %d items of %s with %s", len(items), corpus, member)
        with TritonServer(serving, params["target"], ctx.log_path("index-tritonserver")) as server:
            vectors = _embed(server.grpc_url, member, role, values, settings["batch_size"])
    finally:
        fsops.remove_tree(serving)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    np.save(ctx.out / EMBEDDINGS, vectors)
    (ctx.out / ITEMS).write_text(json.dumps(items, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    facts = {"member": member, "role": role, "count": len(items), "dim": int(vectors.shape[1]), "metric": "cosine"}
    fsops.write_json_atomic(ctx.out / FACTS, facts)
    ctx.record.update(facts)
    log.info("index: %d x %d embeddings from %s", len(items), vectors.shape[1], member)


def stage(model: ModelGraph, member: modelspec.ModelSpec, corpus: Path) -> Stage:
    """``index:<m>``: the corpus embedded by one member, served from that member's stage outputs."""
    spec = model.spec
    settings = spec.block("index")
    tools = trtexec.trt_fingerprint() if model.target == "trt" else toolchain.package_versions(*BENCH_CPU_TOOLCHAIN)
    params = {
        "index": {k: settings[k] for k in ("member", "batch_size")},  # top_k is the search model's, not the index's
        "member": {"name": member.name, "family": member.family},
        "corpus": rel(corpus).as_posix(),
        "target": model.target,
        "toolchain": tools,
        "code": CODE_VERSION,
    }
    deps = {role: member_stage(model.graph, member, name) for role, name in repo.MEMBER_STAGES.items()}
    files = [rel(p) for p in (corpus, *spec.corpus_images)]
    doc = f"vector index of {corpus} embedded by {member.variant}"
    fingerprint = trtexec.trt_fingerprint if model.target == "trt" else None
    return model.stage("index", params, action, doc, deps=deps, files=files, target=model.target, cached=True, fingerprint=fingerprint)
