"""Does the VLM measure progress? Metrics of a labelled episodes table and two model controls.

From the table alone: mean and median VOC (Spearman of normalised progress with time), the success
rate and, given ground-truth success labels, the ROC-AUC of the success score
(:func:`pipeline.calibration.calibrate`). Success and selection are decided by
:func:`pipeline.decision.decide` under the settings of the run that published the table
(:class:`pipeline.report.config.RunSettings`), never read from its stored columns.

VOC alone cannot tell progress from video length: log P("True") may simply grow as the video gets longer.
Two controls re-score a bounded number of episodes with the same decode, schedule and scorer as the
pipeline, after changing only the pixels:

* **static**: the first frame repeated to the episode's length (same timestamps, same prefixes). A model
  that measures progress sees no progress; one that measures length still climbs.
* **shuffled**: the sampled frames in a random order (timestamps kept in order). Progress is scrambled,
  so the VOC should collapse towards 0.

A model worth trusting has real VOC well above both controls' and a success rate that drops on the static
video; the gaps are reported as numbers, not judged against a cut-off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.calibration import calibrate
from pipeline.config import CurationConfig, RelabelConfig, SuccessConfig, config_hash
from pipeline.decision import decide, decide_row
from pipeline.frames.decode import decode_episode
from pipeline.labels import minmax_normalize, value_order_correlation
from pipeline.report.config import DECISION_KEYS, SCORING_KEYS, EvaluateConfig, RunSettings
from pipeline.report.outputs import list_source
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer

VARIANTS = ("real", "static", "shuffled")


def static_clip(clip: EpisodeClip) -> EpisodeClip:
    """The episode's first sampled frame repeated in place of every frame; timing and prefixes unchanged."""
    return replace(clip, frames=np.repeat(clip.frames[:1], len(clip.frames), axis=0))


def shuffled_clip(clip: EpisodeClip, rng: np.random.Generator) -> EpisodeClip:
    """The sampled frames in a random order (never the identity); timestamps and prefixes unchanged."""
    order = rng.permutation(len(clip.frames))
    if np.array_equal(order, np.arange(len(order))):
        order = np.roll(order, 1)  # a 2-frame clip has a 1-in-2 chance of drawing the original order
    return replace(clip, frames=clip.frames[order])


def _finite(values: list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _voc_stats(vocs: list[float | None]) -> dict[str, Any]:
    defined = _finite(vocs)
    return {
        "voc_mean": float(np.mean(defined)) if defined else None,
        "voc_median": float(np.median(defined)) if defined else None,
        "voc_undefined": len(vocs) - len(defined),
    }


def table_metrics(
    rows: list[dict[str, Any]],
    success: SuccessConfig,
    curation: CurationConfig,
    labels: dict[int, bool] | None,
) -> dict[str, Any]:
    """VOC statistics, success rate and (with labels) ROC-AUC over the ``ok`` rows of an episodes table.

    Success and selection are decided here (:func:`pipeline.decision.decide`) from the rows' raw
    scores under ``success`` and ``curation``; stored ``success``/``selected`` columns are ignored.

    Args:
        rows: ``episodes.parquet`` rows (``status``, ``log_p_true``, ``progress``, ``voc`` at least).
        success: the success rule in effect (threshold, window).
        curation: the selection rule in effect.
        labels: ground-truth success per episode index, or None.
    """
    decided = decide(pa.Table.from_pylist(rows), success, curation).to_pylist() if rows else []
    ok = [row for row in decided if row["status"] == "ok"]
    metrics: dict[str, Any] = {
        "episodes": len(rows),
        "scored": len(ok),
        "failed": len(rows) - len(ok),
        **_voc_stats([row.get("voc") for row in ok]),
        "success_rate": float(np.mean([row["success"] for row in ok])) if ok else None,
        "selected": sum(bool(row["selected"]) for row in ok),
        "labels": None,
    }
    if labels is not None:
        pairs = [(row["success_score"], labels[row["episode_index"]]) for row in ok
                 if row["episode_index"] in labels and _finite([row["success_score"]])]  # fmt: skip
        result: dict[str, Any] = {"labelled": len(pairs)}
        try:
            result.update(asdict(calibrate(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))))
        except ValueError as err:  # one class only (or no pairs): AUC is undefined
            result["error"] = str(err)
        metrics["labels"] = result
    return metrics


def episode_numbers(log_p_true: np.ndarray, success: SuccessConfig) -> dict[str, Any]:
    """Per-episode labels of one scoring, decided as the pipeline decides them, plus the raw log P rise."""
    raw = np.asarray(log_p_true, dtype=np.float64)
    progress = minmax_normalize(raw)
    voc = value_order_correlation(progress)
    row = {"status": "ok", "log_p_true": raw.tolist(), "progress": progress.tolist(), "voc": voc}
    # Curation does not enter the controls: only success, under the run's success rule.
    score, succeeded, _ = decide_row(row, success, CurationConfig(enabled=False))
    return {
        "voc": voc if math.isfinite(voc) else None,
        "success_score": score,
        "success": succeeded,
        "log_p_rise": float(raw[-1] - raw[0]),
        "log_p_true": raw.tolist(),
    }


def _variant_summary(numbers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **_voc_stats([n["voc"] for n in numbers]),
        "success_score_mean": float(np.mean([n["success_score"] for n in numbers])),
        "success_rate": float(np.mean([n["success"] for n in numbers])),
        "log_p_rise_mean": float(np.mean([n["log_p_rise"] for n in numbers])),
    }


def run_controls(rows: list[dict[str, Any]], cfg: RelabelConfig, ecfg: EvaluateConfig) -> dict[str, Any]:
    """Re-score up to ``ecfg.max_episodes`` ``ok`` episodes as they are, static and shuffled.

    The frames are decoded again from each episode's source video (``source.storage_options``) with the
    pipeline's decode and schedule under ``cfg.frames``/``cfg.prefixes``, and scored with ``cfg.model``.
    An episode whose video cannot be read is listed under ``skipped`` with the reason.
    """
    chosen = [row for row in rows if row["status"] == "ok"][: ecfg.max_episodes]
    result: dict[str, Any] = {"episodes": [], "skipped": [], "summary": {}, "per_episode": []}
    if not chosen:
        return result
    source = list_source(chosen, cfg.source.storage_options)
    scorer: PrefixScorer | None = None  # loaded at the first episode that decodes, not before
    rng = np.random.default_rng(ecfg.seed)
    for row in chosen:
        index = int(row["episode_index"])
        record = source.records.get(index)
        if record is None:
            result["skipped"].append({"episode_index": index, "reason": source.error or "not in the source"})
            continue
        decoded = decode_episode(
            record.to_row(), cfg.frames, cfg.prefixes, cfg.source.storage_options, cfg.source.block_size
        )
        if decoded["status"] != "ok":
            result["skipped"].append({"episode_index": index, "reason": decoded["error"]})
            continue
        clip = EpisodeClip.from_row(decoded)
        scorer = scorer or PrefixScorer(cfg.model, cfg.scoring)
        clips = {"real": clip, "static": static_clip(clip), "shuffled": shuffled_clip(clip, rng)}
        numbers = {
            name: episode_numbers(scorer.score(variant, record.task).log_p_true, cfg.success)
            for name, variant in clips.items()
        }
        result["episodes"].append(index)
        result["per_episode"].append({"episode_index": index, **numbers})
    if result["per_episode"]:
        result["summary"] = {
            name: _variant_summary([episode[name] for episode in result["per_episode"]]) for name in VARIANTS
        }
    return result


def settings_record(settings: RunSettings) -> dict[str, Any]:
    """Where the evaluation's settings came from, as recorded in its JSON and printed."""
    keys = [*DECISION_KEYS, *SCORING_KEYS]
    keys += [key for key in settings.explicit if key not in keys and not key.startswith("output.")]
    return {
        "run_id": settings.run_id,
        "missing": settings.missing,
        "given": [key for key in settings.explicit if not key.startswith("output.")],
        "origins": {key: settings.origin(key) for key in keys if _is_setting(settings, key)},
    }


def _is_setting(settings: RunSettings, key: str) -> bool:
    try:
        settings.value(key)
    except AttributeError:  # a section given whole (``source.storage_options``) is not one value
        return False
    return True


def evaluate(
    rows: list[dict[str, Any]],
    settings: RunSettings,
    ecfg: EvaluateConfig,
    labels: dict[int, bool] | None = None,
    episodes_uri: str = "",
) -> dict[str, Any]:
    """The whole evaluation of one episodes table, as a JSON-ready dict (NaN written as null).

    Args:
        rows: ``episodes.parquet`` rows.
        settings: the settings of the run that published the table, under the command line's
            overrides: success and curation decide the table's metrics; model, frames, prefixes and
            scoring re-score the controls.
        ecfg: how many episodes the controls re-score, and the shuffle seed.
        labels: optional ground-truth success per episode index.
        episodes_uri: where the table came from (recorded only).
    """
    cfg = settings.cfg
    table_hashes = sorted({str(row["config_hash"]) for row in rows if row.get("config_hash")})
    return {
        "episodes_uri": episodes_uri,
        "threshold": cfg.success.threshold,
        "window": cfg.success.window,
        "model": cfg.model.path,
        "settings": settings_record(settings),
        "config_hash": config_hash(cfg),
        "table_config_hashes": table_hashes,
        "table": table_metrics(rows, cfg.success, cfg.curation, labels),
        "controls": run_controls(rows, cfg, ecfg),
    }


# Printed first whatever their origin; other settings are printed when given on the command line.
_ANNOUNCED = ("success.threshold", "model.path")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _table_lines(result: dict[str, Any], source: str) -> list[str]:
    """Where the settings came from, then the table's metrics under them."""
    table, settings = result["table"], result["settings"]
    origins = settings["origins"]
    lines = [
        f"episodes table: {result['episodes_uri']}",
        f"settings of {source}; given on the command line: {', '.join(settings['given']) or 'none'}",
        *(origins[key] for key in _ANNOUNCED if key in origins),
        *(origins[key] for key in settings["given"] if key in origins and key not in _ANNOUNCED),
        f"episodes {table['episodes']} ({table['scored']} scored, {table['failed']} failed); "
        f"VOC mean {_fmt(table['voc_mean'])}, median {_fmt(table['voc_median'])} "
        f"({table['voc_undefined']} undefined); success rate {_fmt(table['success_rate'], '.2f')} "
        f"at threshold {result['threshold']:g}; {table['selected']} selected for curation",
    ]
    labels = table["labels"]
    if labels is None:
        lines.append("ROC-AUC: no labels given (pass --labels labels.csv)")
    elif "error" in labels:
        lines.append(f"ROC-AUC: undefined for {labels['labelled']} labelled episodes: {labels['error']}")
    else:
        lines.append(
            f"ROC-AUC of the success score: {labels['auc']:.3f} ({labels['labelled']} labelled: "
            f"{labels['positives']} successes, {labels['negatives']} failures); "
            f"Youden-optimal threshold {labels['threshold']:.4f}"
        )
    if result["table_config_hashes"] and result["table_config_hashes"] != [result["config_hash"]]:
        lines.append(
            f"note: the table was scored under config {', '.join(result['table_config_hashes'])}; the "
            f"controls use config {result['config_hash']} (model.*, frames.*, prefixes.*, scoring.* of "
            f"{source}, under the command line)"
        )
    return lines


def _control_lines(result: dict[str, Any]) -> list[str]:
    """The controls side by side, and the VOC gaps."""
    controls = result["controls"]
    lines = [f"controls: episode {s['episode_index']} skipped: {s['reason']}" for s in controls["skipped"]]
    if not controls["summary"]:
        return [*lines, "controls: no episode could be re-scored"]
    lines.append(
        f"controls on {len(controls['episodes'])} episode(s), model {result['model']}, each scored as "
        "recorded, as a static video (first frame repeated) and with shuffled frames:"
    )
    lines.append(
        f"{'variant':<10}{'VOC mean':>10}{'VOC median':>12}{'undefined':>11}{'success score':>15}"
        f"{'success rate':>14}{'log P rise':>12}"
    )
    summary = controls["summary"]
    for name in VARIANTS:
        s = summary[name]
        lines.append(
            f"{name:<10}{_fmt(s['voc_mean']):>10}{_fmt(s['voc_median']):>12}{s['voc_undefined']:>11}"
            f"{s['success_score_mean']:>15.3f}{s['success_rate']:>14.2f}{s['log_p_rise_mean']:>12.3f}"
        )
    gaps = [
        f"real - {name} {_fmt(_gap(summary['real']['voc_mean'], summary[name]['voc_mean']))}"
        for name in VARIANTS[1:]
    ]
    lines.append(
        f"VOC gaps: {'; '.join(gaps)}. A model that measures progress keeps both large; a static video "
        "scoring like the real one means it tracks video length."
    )
    return lines


def format_evaluation(result: dict[str, Any]) -> str:
    """The printed form of :func:`evaluate`'s result: where its settings came from, the table metrics,
    then the controls side by side."""
    settings = result["settings"]
    source = f"run {settings['run_id']}" if settings["run_id"] else f"the defaults ({settings['missing']})"
    return "\n".join([*_table_lines(result, source), *_control_lines(result)])


def _gap(real: float | None, control: float | None) -> float | None:
    return None if real is None or control is None else real - control


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float turned into None, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value
