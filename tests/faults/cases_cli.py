"""Bad command-line values (target, serve address and ports, log level, cache mode) and a failing tool."""

from __future__ import annotations

from tests.faults.cases import BAD, BAD_YAML, Case
from tests.helpers import TINY_YAML

CLI = "command-line"
TOOL = "tool"


def cli_case(case_id: str, broken: str, command: tuple[str, ...], name: str, value: str, **extra: object) -> Case:
    """The line must name the variable and echo the value given."""
    rc = extra.pop("rc", 3)
    return Case(case_id, CLI, broken, {BAD: BAD_YAML}, command, file=name, key=value, rc=rc, **extra)  # type: ignore[arg-type]


SERVE = 90.0  # a serve that wrongly gets as far as starting Triton takes a while to fail
# serve checks its variables when its task runs (after its stages are found up to date): a failed task, doit exit 1.
SERVE_RC = 1
CLI_CASES = [
    cli_case("target-gpu", "target=gpu", ("build:bad", "target=gpu"), "target", "gpu"),
    cli_case("target-empty", "target= (empty)", ("build:bad", "target="), "target", "''"),
    cli_case("target-long", "a 5,000-character target", ("build:bad", "target=" + "t" * 5000), "target", "ttt"),
    cli_case("log-level", "log=loud", ("list", "log=loud"), "log", "loud"),
    cli_case("cache-mode", "cache_mode=sometimes", ("list", "cache_mode=sometimes"), "cache_mode", "sometimes"),
    cli_case(
        "serve-address-999",
        "address=999.1.1.1",
        ("serve:tiny", "target=cpu", "address=999.1.1.1"),
        "address",
        "999.1.1.1",
        timeout=SERVE,
        rc=SERVE_RC,
    ),
    cli_case(
        "serve-address-word",
        "address=not an address",
        ("serve:tiny", "target=cpu", "address=no-such-host.invalid"),
        "address",
        "no-such-host.invalid",
        timeout=SERVE,
        rc=SERVE_RC,
    ),
    cli_case("serve-port-zero", "http_port=0", ("serve:tiny", "target=cpu", "http_port=0"), "http_port", "0", timeout=SERVE, rc=SERVE_RC),
    cli_case(
        "serve-port-huge",
        "grpc_port=99999",
        ("serve:tiny", "target=cpu", "grpc_port=99999"),
        "grpc_port",
        "99999",
        timeout=SERVE,
        rc=SERVE_RC,
    ),
    cli_case(
        "serve-port-word",
        "metrics_port=http",
        ("serve:tiny", "target=cpu", "metrics_port=http"),
        "metrics_port",
        "http",
        timeout=SERVE,
        rc=SERVE_RC,
    ),
    Case("unknown-model", CLI, "build: of a model with no file", {}, ("build:nosuch", "target=cpu"), file="nosuch", rc=3),
]

# tiny's own file with a key changed since its last good build, then built for trt: what broke, and which key.
CHANGED = TINY_YAML.format(path="../ckpts/tiny").replace("  max_seq_len: 32\n", "  max_seq_len: 32\n  opt_batch_size: 4\n")
TOOL_CASES = [
    Case(
        "trtexec-fails",
        TOOL,
        "trtexec exits 1 on the first trt build (nothing earlier to compare with)",
        {"models/tiny.yaml": CHANGED},
        ("build:tiny", "target=trt"),
        file="models/tiny.yaml",
        key="first build on target trt",
        env={"FAKE_TRTEXEC_FAIL": "1"},
        fakes=True,
        allow_new=True,
        timeout=180,
    ),
    Case(
        "trtexec-missing",
        TOOL,
        "target=trt on a machine without trtexec: cpu outputs must survive",
        {},
        ("build:tiny", "target=trt"),
        file="trtexec",
        allow_new=True,
        timeout=180,
    ),
]

CASES = CLI_CASES + TOOL_CASES
