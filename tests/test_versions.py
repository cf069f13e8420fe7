"""The curated pointer (``pipeline.curated.pointer``) on every store: round trip, resolution, and its
age (what the grace time reads); and that readers can import it without the heavy libraries."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from pipeline.atomic import write_bytes
from pipeline.curated.pointer import (
    Pointer,
    pointer_age_s,
    read_pointer,
    resolve_curated,
    version_folder,
    version_number,
)
from pipeline.layout import POINTER_FILE
from pipeline.storage import join_uri
from tests.conftest import BUCKET, PROJECT_ROOT


def test_the_pointer_module_imports_nothing_heavy() -> None:
    # Readers (jobs.pull, the report) resolve the pointer without loading PyAV, LeRobot, torch or Ray.
    heavy = ("av", "lerobot", "torch", "ray")
    code = f"import sys, pipeline.curated.pointer; print([m for m in {heavy!r} if m in sys.modules])"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_version_names() -> None:
    assert version_folder(7) == "v000007" and version_number("v000007") == 7
    assert [version_number(name) for name in ("meta", "v7", "v0000070", ".v000001.tmp")] == [None] * 4
    assert Pointer(3, "v000003").next_root() == "v000004" == Pointer(3, None).next_root()


@pytest.mark.parametrize("where", ["local", "s3", "gs"])
def test_pointer_round_trip_and_age(where: str, tmp_path, request: pytest.FixtureRequest) -> None:
    if where == "local":
        curated, options = str(tmp_path / "curated"), {}
    elif where == "s3":
        curated, options = f"s3://{BUCKET}/versions/curated", request.getfixturevalue("s3_options")
    else:
        curated, options = f"gs://{BUCKET}/versions/curated", request.getfixturevalue("gcs_options")
    assert read_pointer(curated, options) is None and resolve_curated(curated, options) is None
    assert pointer_age_s(curated, options) == math.inf  # no pointer: nothing can resolve to a version
    write_bytes(Pointer(2, "v000002").to_json(), join_uri(curated, POINTER_FILE), options)
    assert read_pointer(curated, options) == Pointer(2, "v000002")
    assert resolve_curated(curated, options) == join_uri(curated, "v000002")
    time.sleep(1.1)  # object-store timestamps have one-second resolution
    age = pointer_age_s(curated, options)
    assert 1.0 <= age < 600, age  # a clock check: the store's timestamp is read as UTC
    write_bytes(Pointer(2, None).to_json(), join_uri(curated, POINTER_FILE), options)
    assert resolve_curated(curated, options) is None
