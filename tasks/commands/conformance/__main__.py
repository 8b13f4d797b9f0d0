"""``python -m tasks.commands.conformance``: the same kit as ``doit conformance target=trt``, without doit."""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.commands.conformance import kit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.commands.conformance", description=kit.__doc__)
    parser.add_argument("--models", default="all", help="all, llm, encoders or a comma list (t5,gpt2,llama,gemma,bert,clip)")
    parser.add_argument(
        "--trtllm-examples", default=None, help="TensorRT-LLM's examples/ folder (default $TRTLLM_EXAMPLES or /app/examples)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = kit.action("trt", args.models, args.trtllm_examples)
    if failed is not None:
        print(failed.message, file=sys.stderr)  # noqa: T201 - the command's verdict
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
