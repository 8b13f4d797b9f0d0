"""Incremental doit graph from Hugging Face checkpoints to Triton model repositories."""
