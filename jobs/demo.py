"""The demo: the whole product on this machine, offline, in a few minutes.

    make demo          (or: python -m jobs.demo [key=value ...])

It builds the tiny random Qwen3-VL and a synthetic LeRobot v3.0 dataset, starts moto's S3 server on
127.0.0.1, uploads the dataset, runs ``jobs.relabel`` from ``s3://`` to ``s3://``, writes the HTML report
(``jobs.report``), copies the outputs to ``outputs/demo/`` for a look, prints the summary, stops the server
and prints the path of the report and the commands that take the local copy to ``lerobot-train``
(``jobs.pull`` from ``outputs/demo/``, then training). The model is random, so the
numbers are meaningless; everything else (Ray Data, object storage, the parquet contracts, the curated
dataset) is the production path. Extra ``key=value`` arguments (and a ``--config FILE``) override the
relabel settings the demo chooses; ``--print-config`` prints them without building or starting anything.

Exit status: 0 the demo ran; 2 refused in one line (a bad argument or setting); 1 with a traceback: a bug.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.cli import Exit, Settings, job_parser, parse, print_config, refusals, run_job
from pipeline.config import RelabelConfig, load_config

JOB = "jobs.demo"
PROJECT = Path(__file__).resolve().parent.parent
CACHE = PROJECT / ".cache"
OUTPUT = PROJECT / "outputs" / "demo"
BUCKET_IN, BUCKET_OUT = "fleet", "fleet-labels"
DATASET = "so100/pick_cube"
MODEL_DIR = CACHE / "models" / "tiny-qwen3_vl-s0"
# A loopback-only S3 endpoint: these are moto's throwaway credentials, not secrets.
DEMO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def demo_overrides(model_dir: Path, endpoint: str) -> list[str]:
    """Relabel settings for the demo: the tiny model, small frames, the moto endpoint."""
    storage = f"{{endpoint_url: '{endpoint}'}}"
    return [
        f"source.uris=[s3://{BUCKET_IN}/{DATASET}]",
        f"source.storage_options={storage}",
        f"output.uri=s3://{BUCKET_OUT}/topreward",
        f"output.storage_options={storage}",
        f"model.path={model_dir}",
        "frames.height=64",
        "frames.width=64",
        "frames.max_frames=16",
        # The tiny random model scores episodes between about -6.5 and -5.9; this splits them for the demo.
        "success.threshold=-6.2",
    ]


def _shown(path: Path) -> str:
    """``path`` as the user types it from the current folder (relative when it is under it)."""
    try:
        return str(path.absolute().relative_to(Path.cwd().absolute()))  # not resolved: venv links stay
    except ValueError:
        return str(path)


def next_steps(dataset_output: Path, dest: Path) -> list[str]:
    """The commands that take the demo's local copy of one dataset's outputs to ``lerobot-train``.

    The demo's S3 server is gone when they are printed, so they pull from the local copy under
    ``outputs/demo/`` (jobs.pull reads any fsspec path). The training command builds ACT without its
    ImageNet backbone (nothing downloaded) and runs two CPU steps: a smoke run on the random labels.
    """
    bin_dir = Path(sys.executable).parent
    python, train = _shown(Path(sys.executable)), _shown(bin_dir / "lerobot-train")
    repo = DATASET.rsplit("/", 1)[-1]
    curated = dest / "curated"
    return [
        "demo: next, pull one dataset's outputs to local disk and train on them (a smoke run on CPU):",
        f"  {python} -m jobs.pull {_shown(dataset_output)} {dest}",
        f"  {train} --dataset.repo_id={DATASET}_curated --dataset.root={curated} "
        "--dataset.video_backend=pyav --policy.type=act --policy.device=cpu --policy.push_to_hub=false "
        "--policy.pretrained_backbone_weights=null --steps=2 --batch_size=2 --num_workers=0 "
        f"--wandb.enable=false --output_dir=outputs/train/{repo}_act",
        "demo: RA-BC with the progress labels needs a policy that supports it (smolvla, pi0, pi05: their "
        "weights come from the Hugging Face Hub), e.g.:",
        f"  {train} --dataset.repo_id={DATASET}_curated --dataset.root={curated} "
        "--dataset.video_backend=pyav --policy.type=smolvla --policy.device=cpu --policy.push_to_hub=false "
        f"--sample_weighting.type=rabc --sample_weighting.progress_path={curated}/topreward_progress.parquet "
        f"--sample_weighting.head_mode=sparse --output_dir=outputs/train/{repo}_smolvla",
    ]


def command_line(argv: list[str] | None) -> list[str]:
    """The settings given on the command line (``--config`` entries, then ``key=value``), checked.

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(
        JOB, __doc__, Settings(RelabelConfig, title="relabel settings (key=value, over the demo's own)")
    )
    with refusals(JOB):
        command = parse(parser, argv)
        cfg = load_config(demo_overrides(MODEL_DIR, "http://127.0.0.1:<port>") + command.overrides)
    if command.print_config:
        note = "the demo run's settings; the S3 endpoint's port is chosen when the server starts"
        raise Exit(print_config([(f"{JOB}: {note}", cfg)]))
    return command.overrides


def main(argv: list[str] | None = None) -> int:
    """Run the demo end to end; 0 when it ran, 2 refused in one line (see the module docstring)."""
    # run_job also ends an Exit from the command line (--help, --print-config, a refusal) with its code.
    return run_job(JOB, lambda: _demo(command_line(argv)))


def _demo(given: list[str]) -> int:
    """Build, serve, relabel, report, copy; the settings ``given`` override the demo's."""
    os.environ.update(DEMO_CREDENTIALS)
    os.environ.setdefault("HF_HOME", str(CACHE / "huggingface"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Ray listens on loopback only here, so its token auth is not needed.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Credential lookups and codec choices are not what a demo transcript is for.
    for name in ("botocore", "aiobotocore", "lerobot"):
        logging.getLogger(name).setLevel(logging.WARNING)

    import s3fs

    from devkit.local_s3 import local_s3
    from devkit.synth import write_v30_dataset
    from devkit.tiny_model import ensure_tiny_model
    from pipeline.relabel import format_summary, run
    from pipeline.report import ReportJob, load_job_config, write_report
    from pipeline.storage import upload_dataset

    model_dir = ensure_tiny_model(MODEL_DIR, "qwen3_vl", "tiny", 0)
    print(f"demo: tiny Qwen3-VL at {model_dir}")
    with local_s3(BUCKET_IN, BUCKET_OUT) as endpoint:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False)
        with tempfile.TemporaryDirectory(prefix="topreward-demo-") as tmp:
            local = write_v30_dataset(
                Path(tmp) / "pick_cube", repo_id=DATASET, lengths=[40, 55, 33, 61, 47, 52]
            )
            upload_dataset(local, fs, f"s3://{BUCKET_IN}/{DATASET}")
        print(f"demo: synthetic LeRobot v3.0 dataset uploaded to s3://{BUCKET_IN}/{DATASET} ({endpoint})")

        overrides = demo_overrides(model_dir, endpoint) + given
        cfg = load_config(overrides)
        summary = run(cfg)
        print(format_summary(summary))
        # The report goes where jobs.report puts it by default, <output.uri>/_report/, read from s3://;
        # given only where the outputs are, it decides with the settings the run recorded.
        reading = [item for item in overrides if item.startswith("output.")]
        report = write_report(load_job_config(reading, ReportJob))

        if OUTPUT.exists():
            shutil.rmtree(OUTPUT)
        fs.get(f"{BUCKET_OUT}/topreward/", str(OUTPUT), recursive=True)
        print(f"demo: outputs copied from s3://{BUCKET_OUT}/topreward to {OUTPUT}")
    print("demo: S3 server stopped")
    local_report = OUTPUT / report.removeprefix(cfg.output.uri.rstrip("/") + "/")
    print(f"demo: report {local_report} (open it in a browser)")
    print(*next_steps(OUTPUT / DATASET, Path("outputs") / "pulled" / DATASET.rsplit("/", 1)[-1]), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
