"""A night with nothing new reads no dataset; a changed dataset is the only one read; the fleet index
is a cache that rebuilds itself; state folders are folded into one shard (docs/fleet-state.md).

One copy of the session's golden outputs on moto S3, reached through a request-counting proxy, is
relabelled several times in a row; each run after the first scores nothing, so no scorer starts.
"""

from __future__ import annotations

import json
import posixpath

import pytest

from devkit.counting_proxy import counting_proxy
from pipeline.layout import FLEET_INDEX_FILE, STATE_DIR
from pipeline.relabel import run
from pipeline.sinks import MARKER_SUFFIX
from tests.conftest import BUCKET, GOLDEN_OUTPUT, relabel_config

OUTPUT = f"s3://{BUCKET}/fleet-state"
DATA_VERBS = ("GET", "HEAD", "PUT", "COPY", "POST", "DELETE")


def _area(bucket: str, key: str) -> str:
    """What a request touched: one dataset's source, state or published files, or run-level objects."""
    parts = key.strip("/").split("/")
    if parts[0] == "synth" and len(parts) >= 2:
        return f"source:{parts[1]}"
    if parts[0] != "fleet-state":
        return "other"
    if parts[1:2] == [STATE_DIR]:
        if parts[2:3] == [FLEET_INDEX_FILE]:
            return "index"
        return f"state:{parts[4]}" if len(parts) > 4 else "state"
    if parts[1:2] == ["_runs"]:
        return "runs"
    return f"output:{parts[2]}" if len(parts) > 2 else "output"


def _touched(snapshot, verbs=DATA_VERBS) -> dict[str, int]:
    """Requests of these verbs per dataset area (source, state or output of one dataset)."""
    touched: dict[str, int] = {}
    for (area, verb), count in snapshot.areas.items():
        if verb in verbs and ":" in area:
            touched[area] = touched.get(area, 0) + count
    return touched


def _etags(s3, prefix: str) -> dict[str, str]:
    """ETag of every published object (run records and the index excluded)."""
    found = s3.find(prefix, detail=True)
    return {
        name: info["ETag"]
        for name, info in found.items()
        if "/_runs/" not in name and not name.endswith(FLEET_INDEX_FILE)
    }


@pytest.fixture(scope="module")
def fleet(golden_run, s3, s3_endpoint, tiny_model_dir):
    """The golden outputs copied to ``s3://episodes/fleet-state`` and a proxy counting requests to moto."""
    s3.copy(GOLDEN_OUTPUT.removeprefix("s3://"), OUTPUT.removeprefix("s3://"), recursive=True)
    s3.invalidate_cache()
    with counting_proxy(s3_endpoint, area=_area) as proxy:
        options = {**golden_run.s3_options, "endpoint_url": proxy.endpoint}
        sources = [f"s3://{BUCKET}/synth/{version}" for version in ("v30", "v21")]

        def relabel(*extra: str):
            proxy.reset()
            return run(relabel_config(sources, OUTPUT, tiny_model_dir, options, *extra))

        yield relabel, proxy, golden_run


def _earlier_commit(s3, folder: str) -> None:
    """Commits the folder's shard a second time under another name, as an earlier night would have."""
    (marker,) = [name for name in s3.find(folder) if name.endswith(MARKER_SUFFIX)]
    content = json.loads(s3.cat_file(marker))
    shard = f"{folder}/{content['shard']}"
    name = "ep-000000-000000000000"
    s3.copy(shard, f"{folder}/{name}.parquet")
    earlier = {**content, "shard": f"{name}.parquet", "committed_at": "2026-01-01T00:00:00+00:00"}
    s3.pipe_file(f"{folder}/{name}{MARKER_SUFFIX}", json.dumps(earlier).encode())


def test_outputs_copied_elsewhere_republish_once_and_fold_their_state(fleet, s3):
    relabel, _, golden = fleet
    state = f"{OUTPUT.removeprefix('s3://')}/{STATE_DIR}/{golden.summary.config_hash}"
    for dataset_id in golden.datasets.values():
        _earlier_commit(s3, f"{state}/{dataset_id}")
    # The state folder moved, so the publish digest differs: both datasets are published again, and
    # compact_markers=1 folds each state folder (two markers) into one shard as it is.
    summary = relabel("output.compact_markers=1")
    assert {d.publish.status for d in summary.datasets.values()} == {"published"}
    assert all(d.skipped == 4 and d.scored == 0 for d in summary.datasets.values())
    s3.invalidate_cache()
    for dataset_id in golden.datasets.values():
        names = sorted(posixpath.basename(n) for n in s3.find(f"{state}/{dataset_id}"))
        stem = names[0].removesuffix(MARKER_SUFFIX)
        assert names == [stem + MARKER_SUFFIX, stem + ".parquet"]


def test_a_night_with_nothing_new_touches_no_dataset(fleet, s3):
    relabel, proxy, _ = fleet
    before = _etags(s3, OUTPUT)
    summary = relabel()
    counts = proxy.snapshot()
    assert {d.publish.status for d in summary.datasets.values()} == {"unchanged"}
    # Not one read or write of any dataset's source, state or published files: listings only.
    assert _touched(counts) == {}
    assert counts.verb("LIST") <= 6 and counts.total <= 20, counts.to_json()
    s3.invalidate_cache()
    assert _etags(s3, OUTPUT) == before


def test_turning_reward_resolution_off_keeps_every_short_episodes_results(fleet, s3):
    """The resolution keys decide per episode: on the suite's short episodes they change nothing, so a
    run without them has the golden run's hash, scores nothing and leaves every published byte."""
    relabel, proxy, golden = fleet
    before = _etags(s3, OUTPUT)
    summary = relabel("frames.min_fps=null", "prefixes.max_spacing_s=null", "frames.max_frames_long=8")
    assert summary.config_hash == golden.summary.config_hash
    assert {d.publish.status for d in summary.datasets.values()} == {"unchanged"}
    assert all(d.skipped == 4 and d.scored == 0 for d in summary.datasets.values())
    assert _touched(proxy.snapshot()) == {}
    s3.invalidate_cache()
    assert _etags(s3, OUTPUT) == before


def test_a_changed_dataset_is_the_only_one_read(fleet, s3):
    relabel, proxy, _ = fleet
    info = f"{BUCKET}/synth/v21/meta/info.json"
    original = s3.cat_file(info)
    try:
        # A rewrite that changes no episode: v21 is read again, nothing is scored or published.
        s3.pipe_file(info, json.dumps({**json.loads(original), "note": "touched"}).encode())
        summary = relabel()
    finally:
        s3.pipe_file(info, original)  # same bytes, same ETag: the shared source is as it was
    touched = _touched(proxy.snapshot())
    assert touched.get("source:v21", 0) > 0
    assert set(touched) == {"source:v21"}, touched
    assert {d.publish.status for d in summary.datasets.values()} == {"unchanged"}


def test_a_deleted_index_is_rebuilt_from_the_markers_with_the_same_outputs(fleet, s3):
    relabel, proxy, _ = fleet
    index = f"{OUTPUT.removeprefix('s3://')}/{STATE_DIR}/{FLEET_INDEX_FILE}"
    before = _etags(s3, OUTPUT)
    s3.rm(index)
    summary = relabel()
    assert {d.publish.status for d in summary.datasets.values()} == {"unchanged"}
    assert all(d.skipped == 4 for d in summary.datasets.values())
    touched = _touched(proxy.snapshot(), verbs=("GET",))
    # Everything was read from the files themselves: both sources, both state folders, both records.
    assert {"source:v30", "source:v21", "state:v30", "state:v21", "output:v30", "output:v21"} <= set(touched)
    s3.invalidate_cache()
    assert s3.exists(index) and _etags(s3, OUTPUT) == before
    relabel()
    assert _touched(proxy.snapshot()) == {}
