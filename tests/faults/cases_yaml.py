"""Model files that are not valid YAML, have the wrong types, unknown keys, or sizes meant to hurt."""

from __future__ import annotations

from tests.faults.cases import BAD, BAD_YAML, BUILD, Case, edited, yaml_case

SYNTAX = "yaml-syntax"
TYPES = "yaml-type"
NAMES = "file-names"
SIZE = "size"

LONG = "x" * 5000


def alias_bomb(depth: int) -> str:
    """A billion-laughs value: each anchor lists the previous one nine times; the last holds 9**(depth+1) items.

    The anchors sit inside the typed value itself, so nothing but that value's own check meets the expansion.
    """
    levels = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return f"[{', '.join(levels)}]"


def bomb_in(key: str, depth: int) -> str:
    """The bomb as ``engine.max_batch_size`` (the first ``max_batch_size`` of the file) or as ``engine.flags.fp16``."""
    if key == "flags":
        return edited("  max_seq_len: 32\n", f"  max_seq_len: 32\n  flags: {{fp16: {alias_bomb(depth)}}}\n")
    return edited("  max_batch_size: 8\n", f"  max_batch_size: {alias_bomb(depth)}\n")


SYNTAX_CASES = [
    yaml_case(
        "unclosed-list", SYNTAX, "a flow list never closed", edited("max_batch_size: 8\n  max_seq", "max_batch_size: [8\n  max_seq"), "line"
    ),
    yaml_case("tab-indent", SYNTAX, "a tab used for indentation", edited("  max_seq_len: 32", "\tmax_seq_len: 32"), "line"),
    yaml_case("duplicate-key", SYNTAX, "the same key twice", edited("name: bad", "name: bad\nname: bad"), "name"),
    yaml_case("bad-indent", SYNTAX, "a key indented deeper than its siblings", edited("  max_seq_len: 32", "     max_seq_len: 32"), "line"),
    yaml_case("unclosed-quote", SYNTAX, "a string quote never closed", edited("family: bert", 'family: "bert'), "line"),
    yaml_case("top-level-list", SYNTAX, "the document is a list, not a mapping", "- name: bad\n- kind: encoder\n", None),
    yaml_case("empty-file", SYNTAX, "an empty model file", "", None),
    yaml_case("two-documents", SYNTAX, "two YAML documents in one file", BAD_YAML + "---\nname: bad\n", None),
    yaml_case(
        "python-tag",
        SYNTAX,
        "a python object tag",
        edited("max_batch_size: 8", "max_batch_size: !!python/object/apply:os.getpid []"),
        "line",
    ),
    yaml_case(
        "binary-tag",
        SYNTAX,
        "a !!binary value where an integer belongs",
        edited("max_batch_size: 8", "max_batch_size: !!binary aGVsbG8="),
        "engine.max_batch_size",
    ),
]

TYPE_CASES = [
    yaml_case(
        "block-is-list",
        TYPES,
        "engine: written as a list",
        edited("engine:\n  max_batch_size: 8\n  max_seq_len: 32", "engine:\n  - 8\n  - 32"),
        "engine",
    ),
    yaml_case("block-is-scalar", TYPES, "triton: written as a number", edited("triton:\n  max_batch_size: 8", "triton: 8"), "triton"),
    yaml_case(
        "source-is-string",
        TYPES,
        "source: a bare path instead of {path: ...}",
        edited("source:\n  path: ../ckpts/bad", "source: ../ckpts/bad"),
        "source",
    ),
    yaml_case("name-is-number", TYPES, "name: a number", edited("name: bad", "name: 7"), "name"),
    yaml_case("kind-is-list", TYPES, "kind: a list", edited("kind: encoder", "kind: [encoder]"), "kind"),
    yaml_case(
        "flags-is-list", TYPES, "engine.flags a list", edited("  max_seq_len: 32\n", "  max_seq_len: 32\n  flags: [fp16]\n"), "engine.flags"
    ),
    yaml_case(
        "extra-args-nested",
        TYPES,
        "engine.extra_args holds a mapping",
        edited("  max_seq_len: 32\n", "  max_seq_len: 32\n  extra_args: [{a: 1}]\n"),
        "engine.extra_args",
    ),
    yaml_case("unknown-top-key", TYPES, "a misspelt block", edited("triton:", "tritn:\n  max_batch_size: 8\ntriton:"), "tritn"),
    yaml_case(
        "unknown-engine-key",
        TYPES,
        "a misspelt engine key",
        edited("  max_seq_len: 32\n", "  max_seq_len: 32\n  max_bach_size: 8\n"),
        "engine.max_bach_size",
    ),
    yaml_case(
        "unknown-source-key",
        TYPES,
        "an unknown key in source",
        edited("  path: ../ckpts/bad\n", "  path: ../ckpts/bad\n  sha: 1\n"),
        "source.sha",
    ),
    yaml_case("wrong-family", TYPES, "family gpt2 for an encoder", edited("family: bert", "family: gpt2"), "family"),
    yaml_case("unknown-family", TYPES, "a family nobody implements", edited("family: bert", "family: roberta-xl"), "family"),
    yaml_case(
        "missing-source-path", TYPES, "source.path names no folder", edited("path: ../ckpts/bad", "path: ../ckpts/nowhere"), "source.path"
    ),
    yaml_case(
        "source-path-is-file",
        TYPES,
        "source.path names a file",
        edited("path: ../ckpts/bad", "path: ../ckpts/bad/config.json"),
        "source.path",
    ),
    yaml_case("missing-name", TYPES, "no name: key", edited("name: bad\n", ""), "name"),
    yaml_case(
        "bench-prompts-missing", TYPES, "bench.prompts names no file", BAD_YAML + "bench:\n  prompts: nowhere.txt\n", "bench.prompts"
    ),
]

NAME_CASES = [
    Case(
        "bad-yaml-and-yml",
        NAMES,
        "bad.yaml and bad.yml both define model bad",
        {BAD: BAD_YAML, "models/bad.yml": BAD_YAML},
        file="models/bad.y",
        key="bad.yml",
    ),
    Case(
        "upper-case-extension",
        NAMES,
        "models/BAD.YAML is silently skipped",
        {"models/BAD.YAML": BAD_YAML.replace("name: bad", "name: BAD")},
        file="BAD.YAML",
    ),
    Case("non-utf8", NAMES, "a Latin-1 byte in a comment", {BAD: BAD_YAML.encode() + b"# caf\xe9\n"}, key=None),
    Case(
        "non-utf8-value",
        NAMES,
        "a Latin-1 byte in a value",
        {BAD: BAD_YAML.replace("family: bert", "family: b\udce9rt").encode("utf-8", "surrogateescape")},
    ),
    Case("utf16-file", NAMES, "the model file saved as UTF-16", {BAD: BAD_YAML.encode("utf-16")}),
    Case("name-mismatch", NAMES, "name: differs from the file name", {BAD: edited("name: bad", "name: good")}, key="name"),
]

SIZE_CASES = [
    yaml_case("long-source-path", SIZE, "a 5,000-character source.path", edited("path: ../ckpts/bad", f"path: {LONG}"), "source.path"),
    yaml_case("long-bench-prompts", SIZE, "a 5,000-character bench.prompts", BAD_YAML + f"bench:\n  prompts: {LONG}\n", "bench.prompts"),
    yaml_case("long-family", SIZE, "a 5,000-character family", edited("family: bert", f"family: {LONG}"), "family"),
    yaml_case("long-unknown-key", SIZE, "a 5,000-character unknown key", edited("triton:", f"{LONG}: 1\ntriton:"), None),
    # An alias budget may refuse a bomb before any key is read: file and line are enough there.
    yaml_case("alias-bomb-4", SIZE, "a depth-4 alias bomb in engine.max_batch_size", bomb_in("max_batch_size", 4), None, memory_mb=1536),
    yaml_case("alias-bomb-9", SIZE, "a depth-9 alias bomb (3.5 billion items)", bomb_in("max_batch_size", 9), None, memory_mb=1536),
    yaml_case("alias-bomb-flags", SIZE, "a depth-6 alias bomb in engine.flags.fp16", bomb_in("flags", 6), None, memory_mb=1536),
    Case("alias-bomb-build", SIZE, "a depth-6 alias bomb met by doit build", {BAD: bomb_in("max_batch_size", 6)}, BUILD, memory_mb=1536),
]

CASES = SYNTAX_CASES + TYPE_CASES + NAME_CASES + SIZE_CASES
