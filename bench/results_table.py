"""Print the results table (markdown) from finished run folders: test F1 / Ign F1 and the analyses.
A pipeline's run folder (`kddocre distill`) gives its fine-tuned model's row, and a second table
of its stages' times (from their manifests, so reused stages show the time they took when built).

    python bench/results_table.py runs/redocred_mini_atlop runs/redocred_mini_afl runs/redocred_mini_teacher
    python bench/results_table.py runs/redocred_mini_kd_mse runs/redocred_mini_kd_kl runs/redocred_mini_na
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

from kddocre_ray import layout

COLUMNS = [("F1", "f1"), ("Ign F1", "ign_f1"), ("P", "precision"), ("R", "recall"), ("freq F1", "freq_f1"),
           ("long-tail F1", "long_tail_f1"), ("Infer-F1", "infer_f1"), ("binary F1", "binary_f1")]


def row(run: Path) -> str:
    m = json.loads((run / layout.METRICS).read_text())
    c = yaml.safe_load((run / layout.CONFIG).read_text())
    t = m["test"]
    if "histories" in m:  # a pipeline: the fine-tuned model, and every stage's time
        hist = m["histories"]["finetune"]
        found = stage_manifests(run)
        train_s = sum(s["seconds"] for s in found.values())
        missing = len(found) < len(json.loads((run / layout.PIPELINE).read_text())["stages"])
    else:
        hist, train_s, missing = m["history"], m["train_time_s"], False
    epoch_s = statistics.median(h["epoch_time_s"] for h in hist)
    best = max(hist, key=lambda h: h.get("dev_f1", 0))
    cells = [c["name"], c["loss"]["name"], str(c["model"]["axial_layers"]), m["precision"], str(len(hist)),
             f"{best.get('dev_f1', float('nan')):.2f} (ep {best['epoch']})",
             *(f"{t[k]:.2f}" for _, k in COLUMNS), f"{t['C']}/{t['W']}/{t['MS']}/{t['MR']}",
             f"{epoch_s / 60:.1f}", f"{'>= ' if missing else ''}{train_s / 60:.1f}"]
    return "| " + " | ".join(cells) + " |"


def stage_folders(run: Path) -> dict[str, Path]:
    """Where each stage of the pipeline run folder `run` holds its files here, found through
    pipeline.json: the stage's own folder, else the run folder's `stages/` (a copy such as
    docs/runs/, made on another machine); a stage found in neither, or still running (pipeline.json
    names its folder once it has finished), is left out."""
    stages = json.loads((run / layout.PIPELINE).read_text())["stages"]
    found = {}
    for name, s in stages.items():
        if "folder" not in s:
            continue
        folder = Path(s["folder"])
        for candidate in (folder, run / layout.STAGES / folder.name, run if folder.name == run.name else None):
            if candidate is not None and (candidate / layout.MANIFEST).exists():
                found[name] = candidate
                break
    return found


def stage_manifests(run: Path) -> dict[str, dict]:
    """Each stage's manifest (its counts and seconds), where stage_folders finds it."""
    return {name: json.loads((folder / layout.MANIFEST).read_text()) for name, folder in stage_folders(run).items()}


def stage_rows(run: Path) -> list[str]:
    stages = json.loads((run / layout.PIPELINE).read_text())["stages"]
    found = stage_manifests(run)
    minutes = {name: f"{m['seconds'] / 60:.1f}" for name, m in found.items()}
    return [f"| {run.name} | {name} | {stages[name]['status']} | {minutes.get(name, 'manifest not here')} |"
            for name in stages]


def main(runs: list[str]) -> None:
    head = ["run", "loss", "axial layers", "precision", "epochs", "best dev F1", *(n for n, _ in COLUMNS),
            "C/W/MS/MR", "median min/epoch", "train min"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in runs:
        print(row(Path(r)))
    pipelines = [Path(r) for r in runs if (Path(r) / layout.PIPELINE).exists()]
    if pipelines:
        print("\n| run | stage | this run | minutes (when built) |\n|---|---|---|---|")
        for r in pipelines:
            print("\n".join(stage_rows(r)))


if __name__ == "__main__":
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    main(sys.argv[1:])
