"""The build core: a stage and how it runs, hashing, the run lock, signal shielding, the artifact cache.

A stage's action key, manifest and early cut-off live in ``stage``.

Imports nothing else from ``tasks``.
"""
