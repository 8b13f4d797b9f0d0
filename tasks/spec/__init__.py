"""The model file: fields, cross-model rules, loading, sweeps.

May import: every layer below stages (core, console, tools, families, triton, bench).
"""
