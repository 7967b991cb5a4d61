"""voxpipe v1 protocol: ``.proto`` sources and their committed generated modules.

Regenerate with ``python -m protos.generate`` (a test fails if the committed modules are stale).
"""
