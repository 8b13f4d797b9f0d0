"""Console output: doit's reporter, progress lines, logging set-up.

May import: core.
"""
