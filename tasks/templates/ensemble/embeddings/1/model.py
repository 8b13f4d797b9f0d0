"""Triton python (BLS) model: ``image`` and/or ``text`` -> ``image_embedding`` and/or ``text_embedding``.

The member ensemble for each input is named in this model's config parameters
(``image_model``, ``text_model``).  Inputs are optional; a request carries at least one,
and gets back the embeddings of exactly the inputs it carried.  A member's error becomes
this request's error, naming the member; other requests are unaffected.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

MEMBER_OUTPUT = "embedding"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        # input name -> (member ensemble, output name)
        self.routes = {i["name"]: (parameters[f"{i['name']}_model"]["string_value"], f"{i['name']}_embedding") for i in config["input"]}

    async def _member(self, name: str, tensor: Any) -> tuple[str, Any]:  # noqa: ANN401 - pb_utils objects are untyped
        model, _ = self.routes[name]
        request = pb_utils.InferenceRequest(
            model_name=model, inputs=[pb_utils.Tensor(name, tensor.as_numpy())], requested_output_names=[MEMBER_OUTPUT]
        )
        return name, await request.async_exec()

    async def _one(self, request: Any) -> Any:  # noqa: ANN401
        given = {n: t for n in self.routes if (t := pb_utils.get_input_tensor_by_name(request, n)) is not None}
        if not given:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"send at least one of: {', '.join(self.routes)}"))
        results = await asyncio.gather(*(self._member(n, t) for n, t in given.items()))
        tensors = []
        for name, response in results:
            model, output = self.routes[name]
            if response.has_error():
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{model}: {response.error().message()}"))
            embedding = pb_utils.get_output_tensor_by_name(response, MEMBER_OUTPUT)
            tensors.append(pb_utils.Tensor(output, embedding.as_numpy()))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    async def execute(self, requests: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))
