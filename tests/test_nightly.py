"""Unattended nightly runs with real faults: bad datasets, rewritten data, a flaky or down bucket.

Every fault is real: files are broken on disk, datasets are rewritten in place, and S3 traffic goes
through a fault-injecting proxy on 127.0.0.1 (devkit.faulty_proxy) in front of moto.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from devkit.faulty_proxy import faulty_proxy
from devkit.synth import write_v21_dataset, write_v30_dataset
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import EPISODES_FILE, PROGRESS_FILE
from pipeline.relabel import format_summary, run
from pipeline.runrecord import read_run_records
from tests.conftest import BUCKET, relabel_config

pytestmark = pytest.mark.slow

GOOD = (12, 14)


def _progress_matches_frames(progress: pq.ParquetFile | Path, dataset_root: Path) -> None:
    """The published progress rows line up with the dataset's own frames, row for row."""
    frames = pq.read_table(dataset_root / "data", columns=["index", "episode_index", "frame_index"])
    frames = frames.sort_by("index")
    rows = pq.read_table(progress).select(["index", "episode_index", "frame_index"])
    assert rows.to_pydict() == frames.to_pydict()


def _bad_fleet(root: Path) -> dict[str, str]:
    """A prefix holding one good dataset and one of each bad kind; values: what the record must say."""
    write_v30_dataset(root / "good" / "v30", lengths=GOOD)
    fps0 = write_v21_dataset(root / "bad" / "fps0", lengths=(12,))
    info = json.loads((fps0 / "meta/info.json").read_text())
    (fps0 / "meta/info.json").write_text(json.dumps({**info, "fps": 0}))
    no_info = write_v30_dataset(root / "bad" / "no_info", lengths=(12,))
    (no_info / "meta/info.json").unlink()
    texts = write_v21_dataset(root / "bad" / "texts", lengths=(12, 12, 12))
    lines = (texts / "meta/episodes.jsonl").read_bytes().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "tasks": ["   "]}).encode()
    # A Latin-1 byte where UTF-8 was expected, inside episode 1's task text.
    lines[1] = lines[1].replace(b'"tasks": ["', b'"tasks": ["caf\xe9 ')
    (texts / "meta/episodes.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    no_video = write_v30_dataset(root / "bad" / "no_video", lengths=(12, 12))
    shutil.rmtree(no_video / "videos")
    truncated = write_v30_dataset(root / "bad" / "truncated", lengths=(12, 12))
    data = next((truncated / "data").rglob("*.parquet"))
    data.write_bytes(data.read_bytes()[:200])
    return {
        "bad/fps0": "meta/info.json: fps 0 is out of range",
        "bad/no_info": "meta/info.json: not found",
        "bad/texts": "episode 0: ",
        "bad/no_video": "videos/",
        "bad/truncated": "data/chunk-000/file-000.parquet",
    }


def _lab_fleet(root: Path) -> Path:
    """``lab/v30`` and ``lab/v21`` under ``root``; v2.1's episodes.jsonl states one wrong length (the data
    parquet is the truth the progress rows must follow). Returns the v2.1 root."""
    write_v30_dataset(root / "lab" / "v30", lengths=(20, 24, 16, 24))
    v21 = write_v21_dataset(root / "lab" / "v21", lengths=(14, 16, 12))
    lines = (v21 / "meta/episodes.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "length": 30})
    (v21 / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    return v21


@pytest.fixture(scope="module")
def nights(ray_session, tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    """Three nightly runs (``retry.max_attempts=2``) over one fleet: the bad fleet of :func:`_bad_fleet`
    and the lab fleet of :func:`_lab_fleet`, whose ``lab/v30`` is rewritten in place between the first
    and the second night (an episode removed, the rest re-indexed, lengths changed).

    Both tests below read the same nights, so the fleet costs three runs instead of five. Returns the
    fleet, the v2.1 root, the bad datasets' expected errors, the output folder, each night's summary, and
    ``after``: a copy of the output folder as each night
    left it (``after[1]`` to ``after[3]``; ``after[3]`` is ``output`` itself, which holds the run records).
    """
    root = tmp_path_factory.mktemp("nightly")
    fleet, output = root / "fleet", root / "labels"
    expected = _bad_fleet(fleet)
    v21 = _lab_fleet(fleet)
    cfg = relabel_config(str(fleet), str(output), tiny_model_dir, {}, "retry.max_attempts=2")
    summaries, after = {}, {}
    for night in (1, 2, 3):
        if night == 2:
            shutil.rmtree(fleet / "lab" / "v30")
            write_v30_dataset(fleet / "lab" / "v30", lengths=(20, 18, 24))
        summaries[night] = run(cfg)
        after[night] = output if night == 3 else shutil.copytree(output, root / f"after-{night}")
    return SimpleNamespace(
        fleet=fleet, v21=v21, expected=expected, output=output, summaries=summaries, after=after
    )


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_bad_datasets_never_stop_the_fleet(nights):
    fleet, first, after = nights.fleet, nights.summaries[1], nights.after
    good = first.datasets["good/v30"]
    assert (good.scored, good.failed) == (len(GOOD), 0) and good.published is not None
    _progress_matches_frames(after[1] / "good/v30" / PROGRESS_FILE, fleet / "good/v30")
    text = format_summary(first)
    for dataset_id, fragment in nights.expected.items():
        summary = first.datasets[dataset_id]
        errors = " | ".join([summary.catalog_error, *summary.errors, summary.publish_error])
        assert dataset_id in errors and fragment in errors, (dataset_id, errors)
        assert fragment in text

    texts = first.datasets["bad/texts"]
    assert (texts.scored, texts.failed) == (2, 1) and "no task text" in texts.errors[0]
    published = pq.read_table(after[1] / "bad/texts" / EPISODES_FILE).to_pylist()
    assert "\ufffd" in published[1]["task"]  # the bad byte is replaced, the episode still scored
    assert first.datasets["bad/no_video"].failed == 2
    assert first.datasets["bad/truncated"].published is None
    assert resolve_curated(str(after[1] / "bad/truncated/curated")) is None

    # Second night: only failed episodes are pending (every row of their batches fails); it completes.
    second = nights.summaries[2]
    assert second.datasets["good/v30"].skipped == len(GOOD)
    assert second.datasets["bad/no_video"].failed == 2
    assert _files(after[2] / "good/v30") == _files(after[1] / "good/v30")
    rows = pq.read_table(after[2] / "bad/no_video" / EPISODES_FILE).to_pylist()
    assert [(r["status"], r["attempt"]) for r in rows] == [("failed", 2), ("failed", 2)]
    assert all("videos/" in r["error"] for r in rows)

    # Third night: retry.max_attempts=2 is reached; the episodes stay failed and are not scored again.
    third = nights.summaries[3]
    assert (third.datasets["bad/no_video"].failed, third.datasets["bad/no_video"].gave_up) == (0, 2)
    assert "gave up after 2 attempts" in format_summary(third)

    records = read_run_records(str(nights.output), {})
    assert [r["status"] for r in records] == ["completed"] * 3
    last = records[-1]
    assert last["config_hash"] == third.config_hash and last["versions"]["ray"]
    assert last["datasets"]["good/v30"]["skipped"] == len(GOOD)
    assert any("bad/fps0" in f["error"] for f in last["failures"])


def test_rewritten_datasets_publish_no_stale_rows(nights):
    first, second, after = nights.summaries[1], nights.summaries[2], nights.after
    assert first.datasets["lab/v30"].scored == 4 and first.datasets["lab/v21"].scored == 3
    _progress_matches_frames(after[1] / "lab/v21" / PROGRESS_FILE, nights.v21)

    # Second night, after the v3.0 dataset was rewritten in place.
    assert second.datasets["lab/v21"].skipped == 3
    assert second.datasets["lab/v30"].scored >= 1  # re-indexed episodes have new fingerprints
    _progress_matches_frames(after[2] / "lab/v30" / PROGRESS_FILE, nights.fleet / "lab/v30")
    episodes = pq.read_table(after[2] / "lab/v30" / EPISODES_FILE)
    assert episodes.column("episode_index").to_pylist() == [0, 1, 2]
    assert episodes.column("length").to_pylist() == [20, 18, 24]


def test_flaky_and_down_bucket(golden_run, s3, s3_endpoint, s3_options, tiny_model_dir):
    # The golden run's v3.0 source and config, read through the proxy: the golden run is the clean run,
    # what the same config gives when the bucket is healthy.
    dataset_id = golden_run.datasets["v30"]
    (source,) = [uri for uri in golden_run.cfg.source.uris if uri.endswith(f"/{dataset_id}")]
    num_episodes = golden_run.summary.datasets[dataset_id].scored

    def config(output: str, source_endpoint: str, *extra: str):
        options = {**s3_options, "endpoint_url": source_endpoint}
        storage = "{" + ", ".join(f"{k}: '{v}'" for k, v in options.items()) + "}"
        return relabel_config(
            source, output, tiny_model_dir, s3_options, f"source.storage_options={storage}", *extra
        )

    def published(output: str) -> dict:
        base = f"{output}/{dataset_id}"
        with s3.open(f"{base}/{EPISODES_FILE}", "rb") as f:
            episodes = pq.read_table(f).drop_columns(["scored_at", "attempt"])
        with s3.open(f"{base}/{PROGRESS_FILE}", "rb") as f:
            progress = pq.read_table(f)
        return {"episodes": episodes.to_pylist(), "progress": progress.to_pylist()}

    clean = golden_run.output
    with faulty_proxy(s3_endpoint) as proxy:
        # Transient: every 3rd source request fails (503 or a reset connection), 12 times in all.
        flaky = f"s3://{BUCKET}/flaky-out/flaky"
        proxy.transient(every=3, limit=12)
        summary = run(config(flaky, proxy.endpoint))
        assert summary.config_hash == golden_run.summary.config_hash
        assert proxy.plan.failed > 0, "no fault was injected"
        assert summary.datasets[dataset_id].failed == 0
        assert published(flaky) == published(clean)

        # Outage: the video object stays unreachable. Episodes fail naming it; the run completes.
        down = f"s3://{BUCKET}/flaky-out/down"
        proxy.outage("/videos/")
        summary = run(config(down, proxy.endpoint, "retry.storage_attempts=2"))
        dataset = summary.datasets[dataset_id]
        assert dataset.failed == num_episodes and proxy.plan.failed > 0
        assert all("s3://" in error and "/videos/" in error for error in dataset.errors)

        # The bucket is back: the next run fills the failed episodes in; outputs equal the clean run.
        proxy.healthy()
        summary = run(config(down, proxy.endpoint))
        assert summary.datasets[dataset_id].scored == num_episodes
        assert published(down) == published(clean)
