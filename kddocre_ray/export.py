"""A trained model out of its run folder: a self-contained folder that loads on a machine that never
saw the run (`Extractor.load(DIR)`), with the weights as safetensors (no pickle), the encoder's
config and tokenizer, the relation schema, the model config and a model card.

The MLflow model (tracking) wraps exactly this folder, so a served model and an exported one are
the same files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from . import layout
from .checkpoint import CONFIG, SAFE_WEIGHTS, SCHEMA, load_model, resolve_checkpoint, save_model
from .errors import InputError
from .storage import location, read_json

CARD = "README.md"
METRIC_KEYS = ("f1", "ign_f1", "precision", "recall", "long_tail_f1", "infer_f1")


def run_folder_of(source: str | Path) -> Path | None:
    """The run folder a model came from (the folder holding metrics.json and config.yaml), if any."""
    path = location(source)
    for folder in (path, path.parent):
        if isinstance(folder, Path) and (folder / layout.CONFIG).is_file():
            return folder
    return None


def model_card(source: str | Path, conf, schema) -> str:
    """What the model is, what it was trained on, how it scored and the command that remakes it."""
    run = run_folder_of(source)
    metrics = read_json(run / layout.METRICS) if run and (run / layout.METRICS).is_file() else {}
    pipeline = run is not None and (run / layout.PIPELINE).is_file()
    lines = [f"# {conf.name}: a KD-DocRE document-level relation extraction model", "",
             f"- Encoder: `{conf.model.encoder}` with the KD-DocRE head (emb {conf.model.emb_size}, block "
             f"{conf.model.block_size}, {conf.model.axial_layers} axial layers), loss `{conf.loss.name}`.",
             f"- Relations: {schema.num_classes - 1} ({SCHEMA}), plus the threshold class.",
             f"- Annotated data: train `{conf.data.train.path}`, dev `{conf.data.dev.path}`, test `{conf.data.test.path}`."]
    if pipeline:
        lines.append(f"- Distilled (`{conf.distill.kd.value}`) on the distant corpus `{conf.pipeline.corpus}`.")
    lines += ["", "## Metrics", ""]
    scored = [(split, metrics[split]) for split in ("dev", "test") if isinstance(metrics.get(split), dict)]
    if scored:
        lines += ["| split | " + " | ".join(METRIC_KEYS) + " |", "|---|" + "---|" * len(METRIC_KEYS)]
        lines += [f"| {split} | " + " | ".join(f"{m[k]:.2f}" if isinstance(m.get(k), (int, float)) else "" for k in METRIC_KEYS)
                  + " |" for split, m in scored]
    else:
        lines.append("None recorded with the run.")
    made_by = ("python jobs/distill.py" if pipeline else "kddocre train") + f" --config {run / layout.CONFIG}" if run else None
    lines += ["", "## How it was made", "", f"    {made_by}" if made_by else "Unknown (a checkpoint folder without its run).",
              "", f"The full config is `{CONFIG}`. Load it with:", "",
              "    from kddocre_ray import Extractor", "    Extractor.load(THIS_FOLDER).extract([\"Some text.\"])", ""]
    return "\n".join(lines)


def export_model(source: str | Path, out: str | Path) -> Path:
    """Write the model of `source` (a run, pipeline run or checkpoint folder) to the new folder
    `out`; a half-written export never appears under `out` (written aside, then renamed)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not an empty folder: choose a new one", path=out)
    model, conf, schema, tokenizer = load_model(resolve_checkpoint(source))  # checked against its checksums
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model(tmp, model, conf, schema, tokenizer, weights=SAFE_WEIGHTS)
        (tmp / CARD).write_text(model_card(source, conf, schema))
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
