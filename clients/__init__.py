"""Client side of voxpipe: the ``voxpipe`` CLI and the async client API."""
