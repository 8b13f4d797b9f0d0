"""Build-tool adapters: the one flag-table core, trtexec, trtllm-build, the toolchain and pinned versions.

May import: core, console.
"""
