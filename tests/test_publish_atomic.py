"""Readers first: a reader process polling while the selection grows and shrinks never fails (local disk
and moto S3), and a publisher killed at chosen steps leaves a whole version readable and the next run
completes it, byte for byte as an uninterrupted run would have."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from devkit import synth
from devkit.fake_labels import commit_scores, job_for, lengths_of
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, POINTER_FILE, RECORD_FILE, STATE_DIR
from pipeline.publish import publish_dataset
from pipeline.storage import upload_dataset
from tests.conftest import BUCKET, PROJECT_ROOT
from tests.publish_support import KILLED, Files, config, wait_for

pytestmark = pytest.mark.slow

LENGTHS = (12, 15, 10, 14)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v30_dataset(tmp_path_factory.mktemp("src") / "fleet" / "arm", lengths=LENGTHS, fps=10)


def _child(command: str, spec: dict, folder: Path) -> subprocess.Popen:
    path = folder / f"{command}-spec.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.publish_support", command, str(path)], cwd=PROJECT_ROOT
    )


# Superseded versions go at the next publish, so these tests see them removed, under readers too.
NO_GRACE = "publish.keep_superseded_s=0"


def _publish(root: str, output: str, threshold: float, options: dict) -> None:
    cfg = config(output, threshold, options, NO_GRACE)
    outcome = publish_dataset(job_for(root, "fleet/arm", output, options), cfg)
    assert outcome.status == "published", outcome.error


@pytest.mark.parametrize("where", ["local", "s3"])
def test_reader_never_fails_while_the_selection_grows_and_shrinks(
    where: str, source: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        options = request.getfixturevalue("s3_options")
        s3 = request.getfixturevalue("s3")
        root = upload_dataset(source, s3, f"s3://{BUCKET}/reader-src/fleet/arm")
        output = f"s3://{BUCKET}/reader-out"
    else:
        options, root, output = {}, str(source), str(tmp_path / "out")
    # Each lower threshold selects one more episode (an append); -2.0 after -4.0 drops two (a new
    # version); -3.0 then appends to it while the superseded version is removed.
    scores = {0: -0.5, 1: -1.5, 2: -2.5, 3: -3.5}
    thresholds = (-2.0, -3.0, -4.0, -2.0, -3.0)
    expected = [1, 2, 3, 4, 2, 3]
    commit_scores(root, "fleet/arm", output, scores, lengths_of(source), options)
    _publish(root, output, -1.0, options)
    spec = {
        "base": f"{output}/fleet/arm",
        "options": options,
        "local": where == "local",
        "stop": str(tmp_path / "stop"),
        "progress": str(tmp_path / "progress.json"),
        "result": str(tmp_path / "result.json"),
    }
    reader = _child("read", spec, tmp_path)
    try:

        def seen(versions: int) -> bool:
            progress = Path(spec["progress"])
            found = json.loads(progress.read_text() or "{}") if progress.exists() else {}
            return len(found.get("seen", [])) >= versions

        for published, threshold in enumerate(thresholds, start=1):
            wait_for(lambda n=published: seen(n), f"the reader to open version {published}")
            _publish(root, output, threshold, options)
        wait_for(lambda: seen(len(expected)), "the reader to open the last version")
    finally:
        Path(spec["stop"]).touch()
        reader.wait(timeout=300)
    result = json.loads(Path(spec["result"]).read_text())
    assert result["failures"] == 0, result["errors"]
    assert result["seen"] == expected and result["reads"] >= len(expected)
    if where == "s3":
        names = s3.find(f"{BUCKET}/reader-out/fleet")
        curated = {n.split("/curated/")[1].split("/")[0] for n in names if "/curated/" in n}
    else:
        names = [str(p) for p in (tmp_path / "out" / "fleet").rglob("*")]
        curated = {p.name for p in (tmp_path / "out" / "fleet" / "arm" / CURATED_DIR).iterdir()}
    assert not [n for n in names if n.endswith(".tmp")]
    assert curated == {POINTER_FILE, "v000002"}  # the superseded version went with the last publish


# Three publishes: all four episodes (v000001), then a stricter threshold drops episode 1 (a new version,
# v000002), then the old threshold brings it back (appended to v000002; v000001 is removed first).
SCORES = {0: 0.0, 1: -1.5, 2: 0.0, 3: -0.5}
THRESHOLDS = (-2.0, -1.0, -2.0)
EPISODES = (4, 3, 4)


def _curated_ok(curated: Path, episodes: int) -> None:
    dataset = LeRobotDataset("t/curated", root=resolve_curated(str(curated)), video_backend="pyav")
    assert dataset.meta.total_episodes == episodes
    assert int(dataset[len(dataset) - 1]["index"]) == len(dataset) - 1


def _contents(output: Path) -> dict[str, bytes]:
    found = Files.of(output / "fleet").content()
    record = json.loads(found.pop(f"arm/{RECORD_FILE}"))
    record.pop("digest")  # it names the state folder, which differs between the two outputs
    return found | {RECORD_FILE: json.dumps(record).encode()}


@pytest.fixture(scope="module")
def uninterrupted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The committed state every fault test starts from, and the files of the three publishes run whole."""
    output = tmp_path_factory.mktemp("reference")
    commit_scores(str(source), "fleet/arm", str(output), SCORES, lengths_of(source), {})
    state = Files.of(output / STATE_DIR)
    for threshold in THRESHOLDS:
        _publish(str(source), str(output), threshold, {})
    assert Files.of(output / STATE_DIR) == state
    return output / STATE_DIR, _contents(output)


@pytest.mark.parametrize(
    ("publish", "step", "occurrence", "readable"),
    [
        (1, "new-file", 3, 4),  # new version: some of its files written
        (1, "commit", 1, 4),  # new version: complete, its info.json written, the pointer not yet
        (1, "pointer", 1, 3),  # new version: the pointer names it, the record is not written
        (2, "cleanup", 1, 3),  # append: while removing the superseded version
        (2, "new-file", 2, 3),  # append: some of its new files written
        (2, "metadata", 1, 3),  # append: new files, tasks/stats/progress written, info.json not yet
    ],
)
def test_killed_publish_keeps_a_whole_version_and_the_next_run_completes_it(
    publish: int,
    step: str,
    occurrence: int,
    readable: int,
    source: Path,
    tmp_path: Path,
    uninterrupted: tuple[Path, dict[str, bytes]],
) -> None:
    state, expected = uninterrupted
    output = tmp_path / "out"
    shutil.copytree(state, output / STATE_DIR)
    for threshold in THRESHOLDS[:publish]:
        _publish(str(source), str(output), threshold, {})
    curated = output / "fleet" / "arm" / CURATED_DIR
    spec = {
        "root": str(source),
        "dataset_id": "fleet/arm",
        "output": str(output),
        "options": {},
        "threshold": THRESHOLDS[publish],
        "kill": [step, occurrence],
        "extra": [NO_GRACE],
    }
    assert _child("publish", spec, tmp_path).wait(timeout=300) == KILLED
    _curated_ok(curated, readable)
    for threshold in THRESHOLDS[publish:]:
        _publish(str(source), str(output), threshold, {})
    _curated_ok(curated, EPISODES[-1])
    assert _contents(output) == expected
