"""A throwaway S3 endpoint on loopback (moto's server) for the demo, benchmarks and tests."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_s3(*buckets: str) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 with the given buckets; yields the endpoint URL, then stops it.

    Credentials come from the environment as for any S3 client; moto accepts any.
    """
    from moto.server import ThreadedMotoServer

    # One access-log line per request drowns the pipeline's own output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if buckets:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
