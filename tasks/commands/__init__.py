"""Commands on top of the graph: serve, promote, publish, pull, plan, the GPU conformance kit.

May import every layer.
"""
