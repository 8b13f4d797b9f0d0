"""Model families: encoder signatures and the HF -> TRT-LLM checkpoint converters.

May import: core, console, tools.
"""
