#!/usr/bin/env bash
# Run a command in the pinned GPU image, the project mounted at the same path inside and outside
# (paths written into config.pbtxt files stay valid on both sides).
#
#   docker/run.sh [--image trtllm|plan] [command ...]
#   docker/run.sh doit build:flan-t5 target=trt
#   docker/run.sh --image plan doit build:minilm target=trt
#
# The image is built on first use from docker/Dockerfile with TRITON_TAG from docker/versions.env and tagged
# tritongraph-<image>:<tag>-<hash of Dockerfile and pyproject.toml>, so a changed dependency builds a new image
# (a persistent runner keeps old images).  HF_HOME (default ~/.cache/huggingface) is mounted too; HF_TOKEN, the
# artifact cache's settings and the object store's credential variables are passed on by name (values never in argv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"

image=trtllm
if [[ "${1:-}" == "--image" ]]; then
    image="${2:-}"
    shift 2 || true
fi
case "$image" in
    trtllm | plan) ;;
    *)
        echo "docker/run.sh: --image: expected trtllm or plan, got '$image'" >&2
        exit 2
        ;;
esac

inputs="$(cat "$here/Dockerfile" "$project/pyproject.toml" | sha256sum | cut -c1-12)"
tag="tritongraph-$image:$TRITON_TAG-$inputs"
if ! docker image inspect "$tag" > /dev/null 2>&1; then
    echo "docker/run.sh: building $tag (Triton $TRITON_TAG, TensorRT-LLM $TRTLLM_VERSION, TensorRT $TENSORRT_VERSION)" >&2
    docker build --target "$image" --build-arg "TRITON_TAG=$TRITON_TAG" --tag "$tag" --file "$here/Dockerfile" "$project"
fi

hf_home="${HF_HOME:-$HOME/.cache/huggingface}"
mkdir -p "$hf_home"
if [[ $# -eq 0 ]]; then
    set -- bash
fi
tty=()
if [[ -t 0 && -t 1 ]]; then
    tty=(--interactive --tty)
fi
exec docker run --rm "${tty[@]}" --gpus all --ipc host --shm-size 2g \
    --volume "$project:$project" --volume "$hf_home:$hf_home" --workdir "$project" \
    --env "HF_HOME=$hf_home" --env HF_TOKEN --env CI \
    --env TRITONGRAPH_CACHE --env TRITONGRAPH_CACHE_MODE --env TRITONGRAPH_CACHE_FETCH \
    --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY --env AWS_SESSION_TOKEN --env AWS_REGION \
    --env AWS_DEFAULT_REGION --env AWS_ENDPOINT_URL --env AWS_ALLOW_HTTP \
    --env AZURE_STORAGE_ACCOUNT_NAME --env AZURE_STORAGE_ACCOUNT_KEY \
    "$tag" "$@"
