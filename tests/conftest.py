"""Real, self-stopping test infrastructure: moto S3 on loopback, a local Ray, a tiny model, synthetic data."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from devkit.local_s3 import local_s3

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE = PROJECT_ROOT / ".cache"

# Caches stay inside the project (never in ~) and nothing reaches a hub.
os.environ.setdefault("HF_HOME", str(CACHE / "huggingface"))
os.environ.setdefault("HF_DATASETS_CACHE", str(CACHE / "huggingface" / "datasets"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tests talk to Ray over loopback only, so token auth buys nothing here.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

S3_KEY = "testing-key-id"
S3_SECRET = "testing-secret-do-not-log"
BUCKET = "episodes"


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 with the test bucket, stopped at the end of the session."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value
    with local_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_options(s3_endpoint) -> dict:
    """fsspec storage options reaching the moto server."""
    return {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": s3_endpoint}


@pytest.fixture(scope="session")
def s3(s3_options):
    """An s3fs filesystem on the moto server."""
    import s3fs

    return s3fs.S3FileSystem(**s3_options, use_listings_cache=False)


@pytest.fixture(scope="session")
def gcs_options():
    """fsspec (gcsfs) storage options reaching a GCS emulator on 127.0.0.1 with the test bucket; the
    emulator is stopped at the end of the session."""
    from devkit.local_gcs import local_gcs

    with local_gcs(BUCKET) as endpoint:
        yield {"endpoint_url": endpoint, "token": "anon"}


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """A real local Ray with 2 CPUs and a small object store, shut down at the end."""
    import ray

    temp_dir = tmp_path_factory.mktemp("ray")
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=512 * 1024 * 1024,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Qwen3-VL folder, built once and cached under .cache/models."""
    from devkit.tiny_model import ensure_tiny_model

    return ensure_tiny_model(CACHE / "models" / "tiny-qwen3_vl-s0", family="qwen3_vl", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen25_dir() -> Path:
    """The tiny random Qwen2.5-VL folder, built once and cached under .cache/models."""
    from devkit.tiny_model import ensure_tiny_model

    return ensure_tiny_model(
        CACHE / "models" / "tiny-qwen2_5_vl-s0", family="qwen2_5_vl", size="tiny", seed=0
    )


def relabel_config(source: str, output: str, model_dir, storage_options: dict, *extra: str):
    """A relabel config for tests: the tiny model, 64x64 frames, 8 frames and 4 prefixes per episode.

    ``source`` is one URI or a list of them; ``storage_options`` apply to both source and output.
    """
    from pipeline.config import load_config

    storage = "{" + ", ".join(f"{k}: '{v}'" for k, v in storage_options.items()) + "}"
    sources = source if isinstance(source, list) else [source]
    return load_config(
        [
            f"source.uris=[{','.join(sources)}]",
            f"source.storage_options={storage}",
            f"output.uri={output}",
            f"output.storage_options={storage}",
            f"model.path={model_dir}",
            "frames.height=64",
            "frames.width=64",
            "frames.max_frames=8",
            "prefixes.num=4",
            "success.threshold=-1000",
            *extra,
        ]
    )


SYNTH_LENGTHS = (20, 33, 45, 21)
SYNTH_FPS = 10


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A local folder holding two tiny synthetic LeRobot datasets, ``v30/`` (v3.0) and ``v21/`` (v2.1).

    Both have 4 episodes of :data:`SYNTH_LENGTHS` frames at :data:`SYNTH_FPS` fps, two 64x64 AV1 cameras
    and self-identifying frames (``devkit.synth.frame_code``).
    """
    from devkit.synth import write_v21_dataset, write_v30_dataset

    folder = tmp_path_factory.mktemp("synth")
    write_v30_dataset(folder / "v30", repo_id="synth/v30", lengths=SYNTH_LENGTHS, fps=SYNTH_FPS)
    write_v21_dataset(folder / "v21", lengths=SYNTH_LENGTHS, fps=SYNTH_FPS)
    return folder


@pytest.fixture(scope="session")
def synth_s3(s3, synth_dir) -> str:
    """The datasets of ``synth_dir`` uploaded to moto S3; returns the prefix ``s3://<bucket>/synth``."""
    from pipeline.storage import upload_dataset

    prefix = f"s3://{BUCKET}/synth"
    for name in ("v30", "v21"):
        upload_dataset(synth_dir / name, s3, f"{prefix}/{name}")
    return prefix


GOLDEN_OUTPUT = f"s3://{BUCKET}/golden"
GOLDEN_DATASETS = {"v30": "synth/v30", "v21": "synth/v21"}


@pytest.fixture(scope="session")
def golden_run(ray_session, s3_options, synth_s3, tiny_model_dir) -> SimpleNamespace:
    """One relabel run over both synthetic datasets (v3.0 and v2.1) to ``s3://episodes/golden``.

    Run once per session on local Ray, moto S3 and the tiny model with :func:`relabel_config`, so every
    test that only reads outputs shares it instead of paying for its own run. Its outputs are
    READ-ONLY: a test that writes under ``golden.output`` (or runs the pipeline into it again) changes
    what every later test sees; such a test makes its own run, or copies the outputs first.

    Returns:
        ``SimpleNamespace(cfg, summary, output, s3_options, datasets)``: the run's config and
        :class:`~pipeline.relabel.RunSummary`, the output URI, the storage options reaching moto, and
        the dataset ids by synthetic version (``{"v30": "synth/v30", "v21": "synth/v21"}``).
    """
    from pipeline.relabel import run

    sources = [f"{synth_s3}/{version}" for version in GOLDEN_DATASETS]
    cfg = relabel_config(sources, GOLDEN_OUTPUT, tiny_model_dir, s3_options)
    summary = run(cfg)
    return SimpleNamespace(
        cfg=cfg, summary=summary, output=GOLDEN_OUTPUT, s3_options=s3_options, datasets=dict(GOLDEN_DATASETS)
    )


BROKEN_DATASET = "fleet/broken"
BROKEN_LENGTHS = (20, 24, 22)  # episode 1's video is corrupt


@pytest.fixture(scope="session")
def broken_run(ray_session, tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    """One relabel run on the Ray Data graph (this process is connected to the session's Ray, so it never
    scores in process) over a local v2.1 dataset ``fleet/broken`` whose episode 1 has a corrupt video.

    Shared by the tests that read what a bad episode leaves (its row, the progress without it) and the
    in-process executor's comparison. Its outputs are READ-ONLY, as :func:`golden_run`'s.

    Returns:
        ``SimpleNamespace(source, output, summary)``: the dataset's root, the local output folder and the
        run's :class:`~pipeline.relabel.RunSummary`.
    """
    from devkit.synth import write_v21_dataset
    from pipeline.relabel import run

    folder = tmp_path_factory.mktemp("broken")
    source = write_v21_dataset(
        folder / "src" / BROKEN_DATASET, lengths=BROKEN_LENGTHS, fps=10, corrupt_episode=1
    )
    output = folder / "ray"
    summary = run(relabel_config(str(source), str(output), tiny_model_dir, {}))
    return SimpleNamespace(source=source, output=output, summary=summary)
