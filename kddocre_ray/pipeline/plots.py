"""The run folder's plots: training curves per stage, frequent vs long-tail F1, error categories."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Training loss (and its RE / KD parts) and dev F1 per epoch, one line per stage."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 3.6))
    for stage, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{stage} loss")
        if any("train_kd_loss" in h for h in history):
            ax_loss.plot(epochs, [h.get("train_kd_loss") for h in history], ls="--", marker="x", label=f"{stage} KD part")
        if any("dev_f1" in h for h in history):
            ax_f1.plot(epochs, [h.get("dev_f1") for h in history], marker="o", label=stage)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss per epoch")
    ax_f1.set(xlabel="epoch", ylabel="dev F1 (%)", title="dev F1 per epoch")
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


def breakdown(metrics: dict, path: Path, title: str) -> None:
    """Left: F1, Ign F1, frequent and long-tail F1, Infer-F1, binary F1. Right: error counts
    C (correct), W (wrong relation), MS (missed), MR (extra)."""
    fig, (ax_f1, ax_err) = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = [("F1", "f1"), ("Ign F1", "ign_f1"), ("frequent", "freq_f1"), ("long-\ntail", "long_tail_f1"),
            ("Infer", "infer_f1"), ("binary", "binary_f1")]  # two lines: side-by-side labels overlapped
    keys = [(label, k) for label, k in keys if k in metrics]
    bars = ax_f1.bar([label for label, _ in keys], [metrics[k] for _, k in keys], color="tab:blue")
    ax_f1.bar_label(bars, fmt="%.1f", fontsize=8)
    ax_f1.set(ylabel="%", title=f"{title}: F1 by slice")
    errors = [e for e in ("C", "W", "MS", "MR") if e in metrics]
    bars = ax_err.bar(errors, [metrics[e] for e in errors], color=["tab:green", "tab:orange", "tab:red", "tab:gray"][:len(errors)])
    ax_err.bar_label(bars, fontsize=8)
    ax_err.set(ylabel="triples", title="error categories")
    _save(fig, path)


def _label(values: dict) -> str:
    """`gamma=0.5` for a trial's values (the last part of each dotted key; groups of keys joined)."""
    def flat(key: str, v) -> list[str]:
        if isinstance(v, dict):
            return [s for k, x in v.items() for s in flat(k, x)]
        return [f"{key.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else f"{key.rsplit('.', 1)[-1]}={v}"]
    return ", ".join(s for k, v in values.items() for s in flat(k, v))


def sweep(trials: list[dict], metric: str, path: Path) -> None:
    """A sweep's trials. Left: the metric per epoch, one line per trial (dashed: stopped early by
    the scheduler). Right: each trial's best value against the swept value when one number is
    swept (γ), else one bar per trial."""
    fig, (ax_curve, ax_best) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for t in trials:
        if t.get("curve"):
            epochs, values = zip(*t["curve"])
            ax_curve.plot(epochs, values, marker="o", ls="--" if t["status"] == "stopped early" else "-",
                          label=_label(t["values"]))
    ax_curve.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (dashed: stopped early)")
    ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curve.grid(alpha=0.3)
    if ax_curve.get_legend_handles_labels()[0]:
        ax_curve.legend(fontsize=8)
    scored = [t for t in trials if t.get(metric) is not None]
    keys = {k for t in scored for k in t["values"]}
    xs = [next(iter(t["values"].values())) for t in scored]
    if len(keys) == 1 and all(isinstance(x, (int, float)) for x in xs):
        key = keys.pop()
        ax_best.plot(xs, [t[metric] for t in scored], "o", label=f"best {metric}")
        tested = [(x, t["test_f1"]) for x, t in zip(xs, scored) if t.get("test_f1") is not None]
        if tested:
            ax_best.plot(*zip(*tested), "s", label="test F1 (finished trials)")
        ax_best.set(xlabel=key, xticks=sorted(set(xs)))
        ax_best.legend(fontsize=8)
    else:
        bars = ax_best.barh([_label(t["values"]) for t in scored], [t[metric] for t in scored])
        ax_best.bar_label(bars, fmt="%.1f", fontsize=8)
    ax_best.set(title=f"best {metric} per trial")
    ax_best.grid(alpha=0.3)
    _save(fig, path)
