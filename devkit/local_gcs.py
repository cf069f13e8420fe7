"""A throwaway Google Cloud Storage endpoint on loopback (``gcp-storage-emulator``) for tests and benches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from devkit.local_s3 import free_port


@contextmanager
def local_gcs(*buckets: str) -> Iterator[str]:
    """Run the GCS emulator in memory on 127.0.0.1 with the given buckets; yields its URL, then stops it.

    gcsfs reaches it with the storage options ``{"endpoint_url": <url>, "token": "anon"}`` (or the
    ``STORAGE_EMULATOR_HOST`` environment variable, which this leaves alone so nothing else is redirected).
    """
    import gcsfs
    from gcp_storage_emulator.server import create_server

    # One log line per request drowns the pipeline's own output.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon")
        for bucket in buckets:
            fs.mkdir(bucket)
        yield endpoint
    finally:
        server.stop()
