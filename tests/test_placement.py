"""``auto`` scorer placement resolved against cluster resources, and the summary line saying where it ran."""

from __future__ import annotations

import time

import pytest

import pipeline.placement as placement_module
from pipeline.config import ConfigError, config_hash, load_config
from pipeline.placement import (
    cluster_placement,
    local_gpu_count,
    resolve_model,
    resolve_placement,
    scoring_line,
)
from pipeline.relabel import DatasetSummary, RunSummary, build_dataset, format_summary


def _resolve(cluster: dict[str, float], *overrides: str):
    cfg = load_config(list(overrides))
    return resolve_placement(cfg.ray, cfg.model, cluster)


def test_cpu_only_cluster_scores_on_one_fractional_cpu_actor():
    placement = _resolve({"CPU": 2.0})
    assert (placement.num_gpus, placement.num_cpus) == (0.0, 0.5)
    assert (placement.min_actors, placement.max_actors) == (1, 1)
    assert (placement.device, placement.dtype) == ("cpu", "float32")
    assert placement.describe() == "cpu float32, 1 actor x 0.5 CPU"


def test_gpu_cluster_gets_one_gpu_per_actor_and_a_pool_up_to_its_gpus():
    placement = _resolve({"CPU": 64.0, "GPU": 8.0})
    assert placement.num_gpus == 1.0
    assert (placement.min_actors, placement.max_actors) == (1, 8)
    assert (placement.device, placement.dtype) == ("cuda", "bfloat16")
    assert placement.describe() == "cuda bfloat16, 1-8 actors x 1 GPU"
    pool = placement.compute()
    assert (pool.min_size, pool.max_size, pool.max_tasks_in_flight_per_actor) == (1, 8, 2)
    assert placement.remote_args() == {"num_gpus": 1.0, "num_cpus": 0.5, "resources": None}


def test_fractional_gpus_put_several_actors_on_each_gpu():
    placement = _resolve({"CPU": 16.0, "GPU": 2.0}, "ray.scorer_num_gpus=0.25")
    assert (placement.min_actors, placement.max_actors) == (1, 8)


def test_custom_resource_bounds_the_pool_and_is_requested():
    placement = _resolve(
        {"CPU": 16.0, "GPU": 4.0, "scorer_node": 2.0}, "ray.scorer_resources={scorer_node: 1}"
    )
    assert placement.max_actors == 2
    assert placement.remote_args()["resources"] == {"scorer_node": 1.0}
    assert placement.describe().endswith("x 1 GPU + 1 scorer_node")
    cpu_only = _resolve({"CPU": 2.0, "scorer_node": 1.0}, "ray.scorer_resources={scorer_node: 1}")
    assert (cpu_only.device, cpu_only.max_actors, cpu_only.num_gpus) == ("cpu", 1, 0.0)


@pytest.mark.parametrize(
    ("overrides", "bounds"),
    [
        (["ray.scorer_actors=3"], (3, 3)),
        (["ray.scorer_actors_min=2", "ray.scorer_actors_max=4"], (2, 4)),
        (["ray.scorer_actors_max=16"], (1, 16)),  # autoscaling clusters: GPUs that are not there yet
    ],
)
def test_explicit_bounds_win(overrides, bounds):
    placement = _resolve({"CPU": 64.0, "GPU": 8.0}, *overrides)
    assert (placement.min_actors, placement.max_actors) == bounds


def test_explicit_gpus_on_a_cluster_without_any_yet(caplog):
    placement = _resolve({"CPU": 4.0}, "ray.scorer_num_gpus=1", "model.dtype=float16")
    assert (placement.num_gpus, placement.max_actors, placement.device, placement.dtype) == (
        1.0,
        1,
        "cuda",
        "float16",
    )
    assert "no GPU yet" in caplog.text


def test_model_device_setting_is_what_the_summary_reports():
    assert _resolve({"CPU": 8.0, "GPU": 1.0}, "model.device=cpu").device == "cpu"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ray.scorer_num_gpus", "one"),
        ("ray.scorer_num_gpus", "-1"),
        ("ray.scorer_actors", "0"),
        ("ray.scorer_actors", "all"),
        ("ray.scorer_actors_max", "0"),
        ("ray.scorer_resources", "{scorer_node: 0}"),
        ("ray.scorer_max_tasks_in_flight", "0"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config([f"{key}={value}"])


def test_summary_says_where_scoring_ran(ray_session):
    cfg = load_config(["model.path=unused"])
    placement = cluster_placement(cfg.ray, cfg.model)
    assert placement.describe() == "cpu float32, 1 actor x 0.5 CPU"  # the session's Ray has 2 CPUs, no GPU
    done = RunSummary("hash-placed", 1.0, {"d": DatasetSummary("d", scored=2)}, placement=placement)
    assert format_summary(done).splitlines()[1] == "scoring: cpu float32, 1 actor x 0.5 CPU"
    idle = RunSummary("hash-placed", 1.0, {"d": DatasetSummary("d", skipped=2)})
    assert format_summary(idle).splitlines()[1] == "scoring: nothing scored in this run"
    assert scoring_line(None, 3) == "scoring: nothing scored in this run"
    # The summary carries the placement; no module state remembers it between runs.
    assert not hasattr(placement_module, "_RESOLVED")


class _NoConnect:
    """A ``connect`` that must not be called (a local run resolves without starting Ray)."""

    def __call__(self) -> None:
        raise AssertionError("connect() called")


@pytest.fixture
def no_ray(monkeypatch):
    """Neither Ray connected nor a cluster to join."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(placement_module.ray, "is_initialized", lambda: False)


def _model(cfg):
    return (cfg.model.device, cfg.model.dtype)


def test_explicit_device_and_dtype_win(no_ray, monkeypatch):
    monkeypatch.setattr(placement_module, "local_gpu_count", lambda: 8)
    cfg = load_config(["model.device=cpu", "model.dtype=bfloat16"])
    assert _model(resolve_model(cfg, _NoConnect())) == ("cpu", "bfloat16")
    assert _model(resolve_model(load_config(["model.device=cuda:1"]), _NoConnect())) == ("cuda:1", "bfloat16")


def test_a_numeric_gpu_request_decides_the_device(no_ray):
    assert _model(resolve_model(load_config(["ray.scorer_num_gpus=0"]), _NoConnect())) == ("cpu", "float32")
    half = load_config(["ray.scorer_num_gpus=0.5"])
    assert _model(resolve_model(half, _NoConnect())) == ("cuda", "bfloat16")


@pytest.mark.parametrize(("gpus", "expected"), [(0, ("cpu", "float32")), (2, ("cuda", "bfloat16"))])
def test_a_local_run_counts_gpus_without_starting_ray(no_ray, monkeypatch, gpus, expected):
    monkeypatch.setattr(placement_module, "local_gpu_count", lambda: gpus)
    assert _model(resolve_model(load_config([]), _NoConnect())) == expected


def test_joining_a_cluster_reads_its_gpus(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    connected = []
    monkeypatch.setattr(placement_module.ray, "is_initialized", lambda: bool(connected))
    monkeypatch.setattr(placement_module.ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 4.0})
    resolved = resolve_model(load_config([]), lambda: connected.append(True))
    assert connected == [True] and _model(resolved) == ("cuda", "bfloat16")


def test_cpu_auto_resolves_to_the_hash_of_explicit_float32_cpu(no_ray, monkeypatch):
    monkeypatch.setattr(placement_module, "local_gpu_count", lambda: 0)
    resolved = resolve_model(load_config([]), _NoConnect())  # device and dtype auto
    assert config_hash(resolved) == config_hash(load_config(["model.device=cpu", "model.dtype=float32"]))
    assert config_hash(resolved) != config_hash(load_config(["model.device=cuda", "model.dtype=bfloat16"]))
    # The actors are handed these values and the placement reports them: the two cannot disagree.
    assert _resolve({"CPU": 2.0}, "model.device=cpu", "model.dtype=float32").dtype == resolved.model.dtype


def test_local_gpu_count_is_rays_count_capped_by_visible_devices(monkeypatch):
    from ray._private import accelerators

    started = time.perf_counter()
    assert local_gpu_count() >= 0  # the installed Ray has the API, and asking is cheap
    assert time.perf_counter() - started < 5

    class FakeManager:
        @staticmethod
        def get_current_node_num_accelerators() -> int:
            return 4

        @staticmethod
        def get_current_process_visible_accelerator_ids() -> list[str]:
            return ["0", "2"]

    monkeypatch.setattr(accelerators, "get_accelerator_manager_for_resource", lambda name: FakeManager)
    assert local_gpu_count() == 2


def test_decode_stays_out_of_the_scorer_actor(ray_session, capsys):
    """Decode runs in its own CPU tasks, overlapping the scorer, even when both ask for the same CPUs."""
    cfg = load_config(["model.path=unused", "ray.decode_num_cpus=0.5", "ray.scorer_num_cpus=0.5"])
    build_dataset([{"episode_index": 0}], cfg, "hash-plan").explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
    assert "TaskPoolMapOperator[Map(decode_episode)]" in physical
    assert "ActorPoolMapOperator[MapBatches(ScoreEpisodes)" in physical
