"""Where the scorer actors run: ``auto`` settings resolved against the cluster the driver joined.

``ray.scorer_num_gpus: auto`` is one GPU per actor when the cluster has GPUs and none otherwise (a CPU
fraction, ``ray.scorer_num_cpus``, then keeps decode tasks schedulable). ``ray.scorer_actors: auto`` is
an autoscaling pool from ``ray.scorer_actors_min`` to as many actors as the cluster holds: its GPUs
divided by the GPUs per actor (``scorer_num_gpus: 0.5`` puts two actors on each GPU) and, for every
custom resource in ``ray.scorer_resources``, its total divided by the amount each actor needs. On a
cluster without GPUs or custom resources the pool is one actor that uses the node's cores: more CPU
actors only split the same cores, and actors holding every CPU starve the decode tasks.

``model.device``/``model.dtype: auto`` are resolved earlier, before the run is planned, because the
resolved dtype and device class are part of the config hash (:func:`resolve_model`); the actors get the
resolved values, so what they load and what the hash says cannot differ.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from pipeline.config import AUTO, ModelConfig, RayConfig, RelabelConfig, device_class, resolved_dtype

log = logging.getLogger(__name__)


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
    # Scored in the driver's own process, not an actor pool (job.inline_max_episodes).
    in_process: bool = False

    def compute(self) -> ray.data.ActorPoolStrategy:
        """The Ray Data actor pool: fixed when the bounds agree, autoscaling between them otherwise."""
        return ray.data.ActorPoolStrategy(
            min_size=self.min_actors,
            max_size=self.max_actors,
            max_tasks_in_flight_per_actor=self.max_tasks_in_flight,
        )

    def remote_args(self) -> dict[str, Any]:
        """The resources each scorer actor asks Ray for, as ``map_batches``' named arguments.

        Restarts without limit, which the scorer relies on (a fatal device error exits the actor,
        :mod:`pipeline.stages.score`), are Ray Data's default for pool actors and are not passed: Ray
        deprecates other actor options through ``**ray_remote_args``.
        """
        return {
            "num_gpus": self.num_gpus,
            "num_cpus": self.num_cpus,
            "resources": dict(self.resources) or None,
        }

    def describe(self) -> str:
        """One line for the run summary, e.g. ``cuda bfloat16, 1-8 actors x 1 GPU``."""
        if self.in_process:
            return f"{self.device} {self.dtype}, in the driver's process (job.inline_max_episodes)"
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
        num_gpus = _auto_num_gpus(gpus)
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
        # Ray hides GPUs from actors that request none, so ``auto`` follows the GPU request. A run has
        # resolved it already (resolve_model); this keeps the function whole for other callers.
        device = "cuda" if num_gpus > 0 else "cpu"
    else:
        device = device_class(model_cfg.device)
    dtype = resolved_dtype(model_cfg.dtype, device)
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


def cluster_placement(ray_cfg: RayConfig, model_cfg: ModelConfig) -> ScorerPlacement:
    """Resolve against the connected Ray cluster (the run summary carries the result)."""
    placement = resolve_placement(ray_cfg, model_cfg, ray.cluster_resources())
    log.info("scoring on %s", placement.describe())
    return placement


def scoring_line(placement: ScorerPlacement | None, scored: int) -> str:
    """Where a run scored, for the summary header; ``placement`` is None when nothing was pending."""
    if not scored or placement is None:
        return "scoring: nothing scored in this run"
    return f"scoring: {placement.describe()}"


def _auto_num_gpus(cluster_gpus: float) -> float:
    """``ray.scorer_num_gpus: auto``: one GPU per actor on a cluster with a whole GPU, else none."""
    return 1.0 if cluster_gpus >= 1 else 0.0


def local_gpu_count() -> int:
    """The GPUs a local Ray started here would register, counted as Ray counts them, without starting it.

    Ray asks its accelerator manager for the node's devices (NVML, no CUDA context) and caps the count
    by ``CUDA_VISIBLE_DEVICES``; this does the same (well under a second, tested).
    """
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        count = int(manager.get_current_node_num_accelerators())
        visible = manager.get_current_process_visible_accelerator_ids()
    except (ImportError, AttributeError):  # a Ray whose private API moved: torch counts the same devices
        import torch

        return torch.cuda.device_count()
    return count if visible is None else min(count, len(visible))


def cluster_gpus(ray_cfg: RayConfig, connect: Callable[[], None]) -> float:
    """The GPUs of the cluster the run will use: the connected one, the one it joins, or this node.

    Joining (``ray.address`` or ``RAY_ADDRESS``) connects through ``connect`` (cheap, and the run needs
    the connection anyway); a local run counts this node's GPUs without starting Ray.
    """
    if not ray.is_initialized() and (ray_cfg.address or os.environ.get("RAY_ADDRESS")):
        connect()
    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    return float(local_gpu_count())


def scorer_device(cfg: RelabelConfig, connect: Callable[[], None]) -> str:
    """The device the scorer actors will load the model on.

    An explicit ``model.device`` wins; else a numeric ``ray.scorer_num_gpus`` decides (GPU iff > 0); else
    (``auto``) the cluster's GPUs do, by the rule :func:`resolve_placement` applies to the GPU request,
    so the actors get GPUs exactly when they are told to use CUDA.
    """
    if cfg.model.device != AUTO:
        return cfg.model.device
    if cfg.ray.scorer_num_gpus != AUTO:
        return "cuda" if float(cfg.ray.scorer_num_gpus) > 0 else "cpu"
    return "cuda" if _auto_num_gpus(cluster_gpus(cfg.ray, connect)) > 0 else "cpu"


def resolve_model(cfg: RelabelConfig, connect: Callable[[], None]) -> RelabelConfig:
    """``cfg`` with ``model.device`` and ``model.dtype`` resolved (no ``auto`` left), on the driver.

    Done before planning: the config hash covers the resolved dtype and device class, and the scorer
    actors receive these values, so fp32-on-CPU and bf16-on-GPU scores never share a hash.

    Args:
        cfg: The run config.
        connect: Joins the cluster (called only when ``auto`` needs the GPU count of a cluster being
            joined).
    """
    device = scorer_device(cfg, connect)
    model = replace(cfg.model, device=device, dtype=resolved_dtype(cfg.model.dtype, device))
    return replace(cfg, model=model)
