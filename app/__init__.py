"""The composition root: the `gridwatch` command, `serve` (which starts the parts) and the demo.

The only package that imports the stages; nothing imports it.
"""
