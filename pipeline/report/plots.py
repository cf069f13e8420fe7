"""The report's figures, drawn with matplotlib's object API (no pyplot state), embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PROGRESS_COLOR, LOG_P_COLOR, SUCCESS_COLOR, FAILURE_COLOR = "C0", "C1", "C2", "C3"


def data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (rendered by the Agg backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def frame_strip(frames: np.ndarray, gap: int = 4) -> np.ndarray:
    """Frames ``(N, H, W, 3)`` side by side on a white background, ``gap`` pixels apart."""
    count, height, width, _ = frames.shape
    strip = np.full((height, count * width + (count - 1) * gap, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        strip[:, i * (width + gap) : i * (width + gap) + width] = frame
    return strip


def episode_figure(
    frames: np.ndarray | None,
    frame_indices: list[int],
    prefix_frame_indices: list[int],
    progress: list[float],
    log_p_true: list[float],
    length: int,
    success_score: float,
    threshold: float,
    window: int,
    dpi: int,
) -> str:
    """One episode: sampled frames on top, normalised progress and raw log P("True") per prefix beneath.

    The raw panel carries the success threshold and the success score drawn over the last ``window``
    prefixes it averages, so the decision can be read off the plot.

    Args:
        frames: ``(N, H, W, 3)`` uint8 thumbnails, or None when they could not be decoded.
        frame_indices: raw frame index of each thumbnail.
        prefix_frame_indices: raw index of the last frame of each prefix (the x axis).
        progress: normalised progress per prefix.
        log_p_true: raw log P("True") per prefix.
        length: raw frames in the episode.
        success_score: mean raw log P("True") over the last ``window`` prefixes.
        threshold: the success threshold in effect.
        window: prefixes the success score averages.
        dpi: resolution of the PNG.

    Returns:
        The PNG as a data URI.
    """
    rows = 3 if frames is not None else 2
    ratios = [1.3, 1, 1] if frames is not None else [1, 1]
    fig = Figure(figsize=(9, 1.6 * sum(ratios) + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, 1, gridspec_kw={"height_ratios": ratios})
    if frames is not None:
        strip_ax, progress_ax, raw_ax = axes
        strip_ax.imshow(frame_strip(frames))
        width, gap = frames.shape[2], 4
        strip_ax.set_xticks([i * (width + gap) + width / 2 for i in range(len(frames))])
        strip_ax.set_xticklabels([f"frame {i}" for i in frame_indices], fontsize=8)
        strip_ax.set_yticks([])
        strip_ax.tick_params(length=0)
        for spine in strip_ax.spines.values():
            spine.set_visible(False)
    else:
        progress_ax, raw_ax = axes
    x = np.asarray(prefix_frame_indices)
    progress_ax.plot(x, progress, marker="o", color=PROGRESS_COLOR)
    progress_ax.set_ylim(-0.05, 1.05)
    progress_ax.set_xlim(-0.5, length - 0.5)  # the whole episode, as the strip above shows it
    progress_ax.set_ylabel("progress")
    progress_ax.grid(alpha=0.3)
    raw_ax.sharex(progress_ax)
    progress_ax.tick_params(labelbottom=False)
    raw_ax.plot(x, log_p_true, marker="o", color=LOG_P_COLOR, label='raw log P("True")')
    raw_ax.axhline(threshold, color="0.3", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    succeeded = success_score > threshold
    raw_ax.plot(
        x[-window:],
        [success_score] * len(x[-window:]),
        color=SUCCESS_COLOR if succeeded else FAILURE_COLOR,
        linewidth=3,
        label=f"success score {success_score:.3f}",
    )
    raw_ax.set_ylabel("log P")
    raw_ax.set_xlabel("raw frame index (end of prefix)")
    raw_ax.grid(alpha=0.3)
    raw_ax.legend(fontsize=7, loc="best")
    return data_uri(fig)


# Fixed margins (fractions of the 5x3 in figure) that fit the histograms' labels, counts up to 5 digits:
# constrained layout measures every text of every figure, half of a fleet report's time (two
# histograms per dataset).
HISTOGRAM_MARGINS = {"left": 0.15, "right": 0.97, "bottom": 0.16, "top": 0.96}
# One filled outline instead of a rectangle per bin: the same pixels (edgeless bars of one colour touch),
# a third of a histogram's cost.
HISTOGRAM_TYPE = "stepfilled"


def _histogram_axes(dpi: int) -> tuple[Figure, Axes]:
    """A 5x3 in figure with one axes placed by :data:`HISTOGRAM_MARGINS`."""
    fig = Figure(figsize=(5, 3), dpi=dpi)
    fig.subplots_adjust(**HISTOGRAM_MARGINS)
    return fig, fig.subplots()


def success_histogram(scores: list[float], threshold: float, dpi: int) -> str:
    """Histogram of the episodes' success scores with the threshold line."""
    fig, ax = _histogram_axes(dpi)
    ax.hist(scores, bins=max(5, min(30, len(scores))), histtype=HISTOGRAM_TYPE, color=PROGRESS_COLOR)
    ax.axvline(threshold, color=FAILURE_COLOR, linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel('success score (mean raw log P("True"), last prefixes)')
    ax.set_ylabel("episodes")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return data_uri(fig)


def voc_histogram(vocs: list[float], dpi: int) -> str:
    """Histogram of the episodes' value-order correlation (Spearman of progress with time), in [-1, 1]."""
    fig, ax = _histogram_axes(dpi)
    ax.hist(vocs, bins=np.linspace(-1, 1, 21), histtype=HISTOGRAM_TYPE, color=PROGRESS_COLOR)
    if vocs:
        ax.axvline(float(np.median(vocs)), color="0.3", linestyle="--", label=f"median {np.median(vocs):.2f}")
        ax.legend(fontsize=8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("VOC (Spearman of progress with time)")
    ax.set_ylabel("episodes")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return data_uri(fig)


def trend_figure(
    labels: list[str],
    scored: list[int],
    success_rate: list[float],
    failures: list[int],
    broken: list[bool],
    dpi: int,
) -> str:
    """The fleet's runs, oldest first: episodes scored, success rate and failures per run.

    Args:
        labels: one x label per run (its start date).
        scored: episodes each run scored.
        success_rate: percent of the episodes each run scored that succeed (NaN when none is known).
        failures: failed episodes and datasets each run recorded.
        broken: whether each run broke (shaded red on every panel).
        dpi: resolution of the PNG.
    """
    fig = Figure(figsize=(9, 4.2), dpi=dpi, layout="constrained")
    count_ax, rate_ax, fail_ax = fig.subplots(3, 1, sharex=True)
    x = np.arange(len(labels))
    count_ax.bar(x, scored, color=PROGRESS_COLOR)
    for ax in (count_ax, rate_ax, fail_ax):
        for i in x[np.asarray(broken, dtype=bool)]:
            ax.axvspan(i - 0.5, i + 0.5, color=FAILURE_COLOR, alpha=0.15, linewidth=0)
    if any(broken):
        count_ax.plot([], [], "s", color=FAILURE_COLOR, alpha=0.3, label="broken run")
        count_ax.legend(fontsize=7, loc="upper left")
    count_ax.set_ylabel("scored", fontsize=8)
    rate_ax.plot(x, success_rate, marker="o", markersize=3, color=SUCCESS_COLOR)
    rate_ax.set_ylim(0, 100)
    rate_ax.set_ylabel("success %", fontsize=8)
    fail_ax.bar(x, failures, color=FAILURE_COLOR)
    fail_ax.set_ylabel("failures", fontsize=8)
    step = max(1, len(labels) // 10)
    fail_ax.set_xticks(x[::step], [labels[i] for i in x[::step]], fontsize=7)
    for ax in (count_ax, rate_ax, fail_ax):
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=ax is not rate_ax))
    fail_ax.set_xlabel("run (start date, UTC)", fontsize=8)
    return data_uri(fig)
