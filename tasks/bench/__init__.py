"""Benchmarking: load generator, perf tools, workload, metrics, server statistics, results and plots.

May import: core, console, tools, families, triton.
"""
