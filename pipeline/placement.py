"""Where the scorer actors run: ``auto`` settings resolved against the cluster the driver joined.

``ray.scorer_num_gpus: auto`` is one GPU per actor when the cluster has GPUs and none otherwise (a CPU
fraction, ``ray.scorer_num_cpus``, then keeps decode tasks schedulable). ``ray.scorer_actors: auto`` is
an autoscaling pool from ``ray.scorer_actors_min`` to as many actors as the cluster holds: its GPUs
divided by the GPUs per actor (``scorer_num_gpus: 0.5`` puts two actors on each GPU) and, for every
custom resource in ``ray.scorer_resources``, its total divided by the amount each actor needs. On a
cluster without GPUs or custom resources the pool is one actor that uses the node's cores: more CPU
actors only split the same cores, and actors holding every CPU starve the decode tasks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
import torch

from pipeline.config import ModelConfig, RayConfig
from pipeline.scoring.model import resolve_dtype

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class ScorerPlacement:
    """The scorer pool's resolved shape: resources per actor, pool bounds, and the device it scores on."""

    num_gpus: float
    num_cpus: float
    min_actors: int
    max_actors: int
    device: str
    dtype: str
    resources: dict[str, float] = field(default_factory=dict)
    max_tasks_in_flight: int = 2

    def compute(self) -> ray.data.ActorPoolStrategy:
        """The Ray Data actor pool: fixed when the bounds agree, autoscaling between them otherwise."""
        return ray.data.ActorPoolStrategy(
            min_size=self.min_actors,
            max_size=self.max_actors,
            max_tasks_in_flight_per_actor=self.max_tasks_in_flight,
        )

    def remote_args(self) -> dict[str, Any]:
        """Ray arguments of each scorer actor: its resources, and restarts without limit.

        Restarts are Ray Data's default for pool actors, stated here because the scorer relies on them (a
        fatal device error exits the actor, :mod:`pipeline.stages.score`) and because arguments that
        differ from the decode stage's keep decode in its own CPU tasks: with equal arguments (a CPU
        scorer and decode both at 0.5 CPU) Ray Data fuses decode into the actor, which then decodes on
        its critical path instead of overlapping.
        """
        args: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus, "max_restarts": -1}
        if self.resources:
            args["resources"] = dict(self.resources)
        return args

    def describe(self) -> str:
        """One line for the run summary, e.g. ``cuda bfloat16, 1-8 actors x 1 GPU``."""
        actors = (
            f"{self.min_actors} actor{'s' if self.min_actors > 1 else ''}"
            if self.min_actors == self.max_actors
            else f"{self.min_actors}-{self.max_actors} actors"
        )
        each = [f"{self.num_gpus:g} GPU" if self.num_gpus else f"{self.num_cpus:g} CPU"]
        each += [f"{amount:g} {name}" for name, amount in sorted(self.resources.items())]
        return f"{self.device} {self.dtype}, {actors} x {' + '.join(each)}"


def _capacity(num_gpus: float, resources: Mapping[str, float], cluster: Mapping[str, float]) -> int | None:
    """How many actors the cluster's GPUs and custom resources hold; None when nothing bounds them."""
    bounds = []
    if num_gpus > 0:
        bounds.append(math.floor(cluster.get("GPU", 0.0) / num_gpus + 1e-9))
    bounds += [math.floor(cluster.get(name, 0.0) / amount + 1e-9) for name, amount in resources.items()]
    return min(bounds) if bounds else None


def resolve_placement(
    ray_cfg: RayConfig, model_cfg: ModelConfig, cluster: Mapping[str, float]
) -> ScorerPlacement:
    """Resolve the ``auto`` settings of ``ray_cfg`` against ``cluster`` (``ray.cluster_resources()``).

    Args:
        ray_cfg: the ``ray`` config section.
        model_cfg: the ``model`` section (the device and dtype the actors will use).
        cluster: total resources of the cluster, e.g. ``{"CPU": 32, "GPU": 4, "scorer_node": 1}``.
    """
    gpus = cluster.get("GPU", 0.0)
    if ray_cfg.scorer_num_gpus == AUTO:
        num_gpus = 1.0 if gpus >= 1 else 0.0
    else:
        num_gpus = float(ray_cfg.scorer_num_gpus)
        if num_gpus > 0 and gpus == 0:
            # An autoscaling cluster may add GPU nodes later; a fixed one will leave the pool pending.
            log.warning("ray.scorer_num_gpus=%g but the cluster has no GPU yet", num_gpus)
    resources = dict(ray_cfg.scorer_resources)
    if ray_cfg.scorer_actors == AUTO:
        capacity = _capacity(num_gpus, resources, cluster)
        low = ray_cfg.scorer_actors_min
        high = ray_cfg.scorer_actors_max or max(low, 1 if capacity is None else capacity)
    else:
        low = high = int(ray_cfg.scorer_actors)
    if model_cfg.device == AUTO:
        # Ray hides GPUs from actors that request none, so ``auto`` follows the GPU request.
        device = "cuda" if num_gpus > 0 else "cpu"
    else:
        device = torch.device(model_cfg.device).type
    dtype = str(resolve_dtype(model_cfg.dtype, torch.device(device))).removeprefix("torch.")
    return ScorerPlacement(
        num_gpus=num_gpus,
        num_cpus=ray_cfg.scorer_num_cpus,
        min_actors=low,
        max_actors=high,
        device=device,
        dtype=dtype,
        resources=resources,
        max_tasks_in_flight=ray_cfg.scorer_max_tasks_in_flight,
    )


# Placement resolved by this driver per config hash, for the run summary (format_summary has only the
# summary); a driver runs one relabel graph at a time.
_RESOLVED: dict[str, ScorerPlacement] = {}


def cluster_placement(ray_cfg: RayConfig, model_cfg: ModelConfig, config_hash: str) -> ScorerPlacement:
    """Resolve against the connected Ray cluster and remember it for :func:`scoring_line`."""
    placement = resolve_placement(ray_cfg, model_cfg, ray.cluster_resources())
    log.info("scoring on %s", placement.describe())
    _RESOLVED[config_hash] = placement
    return placement


def scoring_line(config_hash: str, scored: int) -> str:
    """Where this driver's run under ``config_hash`` scored, for the summary header."""
    placement = _RESOLVED.get(config_hash)
    if not scored or placement is None:
        return "scoring: nothing scored in this run"
    return f"scoring: {placement.describe()}"
