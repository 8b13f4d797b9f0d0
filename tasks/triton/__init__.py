"""Triton: model layouts (encoder, LLM), the server process, its argv, ranks and toolchain compatibility, config parity.

May import: core, console, tools, families.
"""
