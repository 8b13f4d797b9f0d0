"""One module per stage (fetch ... compare), each with its params, action and doc; the graph wires them.

May import every layer except commands.
"""
