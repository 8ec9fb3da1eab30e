"""Stages of the distillation pipeline: their configs, fingerprints, folders and manifests.

Each stage's output lives in `output_dir/stages/<stage>-<fingerprint>/`, so pipelines that
share a stage share its output (NA, KD-KL and KD-MSE of one seed use one teacher and one set of
soft labels). A stage is complete when its folder holds `manifest.json` with its fingerprint:
on a local disk data stages build in a temporary folder that is renamed into place with its
manifest inside; in an object store (output_dir=s3://..., which has no rename) they write in
place and the manifest last; training stages write the manifest after the run folder is
finished. Anything else is unfinished: a training stage resumes from its last Ray Train
checkpoint, a data stage restarts.

A fingerprint is a digest of the result-changing config values the stage depends on (its own
derived config, see `stage_configs`), of the upstream stages' fingerprints, and of the code
version; paths never enter it (fingerprint.py).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import layout
from ..config import KD, Config, DistillConfig, InitFrom, PipelineConfig
from ..errors import InputError
from ..fingerprint import code_version, digest, path_digest, result_values
from ..storage import (
    Location,
    RemotePath,
    check_files,
    file_record,
    files_under,
    location,
    read_json,
    rmtree,
    write_json,
)

STAGES = ("teacher", "ingest", "soft_labels", "student", "finetune", "evaluate")


@dataclass
class Stage:
    name: str
    fingerprint: str
    folder: Location
    conf: Config | None = None  # training stages: the config `kddocre train` runs
    inputs: dict[str, str] = field(default_factory=dict)  # upstream stage -> fingerprint
    values: dict[str, Any] = field(default_factory=dict)  # what the fingerprint was made of
    owns_folder: bool = True  # False for the evaluate stage, whose folder is the pipeline's run folder

    @property
    def manifest(self) -> dict | None:
        path = self.folder / layout.MANIFEST
        return read_json(path) if path.exists() else None

    @property
    def recorded(self) -> bool:
        """Its manifest names this fingerprint: finished, unless its files were damaged since
        (`damage`). One small read, without listing the files."""
        try:
            m = self.manifest
        except InputError:
            return False
        return m is not None and m.get("fingerprint") == self.fingerprint

    @property
    def complete(self) -> bool:
        return self.state() == (True, None)

    def damage(self) -> str | None:
        return self.state()[1]

    def state(self) -> tuple[bool, str | None]:
        """(recorded: its manifest names this fingerprint, damage: why its outputs cannot be reused,
        or None), from one read of the manifest. Damage is an unreadable manifest, or a file it lists
        missing or of another size: one listing per file; `kddocre verify` reads the bytes
        (`verify_stage`)."""
        try:
            m = self.manifest
        except InputError as e:
            return False, str(e)
        if m is None:
            return False, None
        recorded = m.get("fingerprint") == self.fingerprint
        bad = check_files(self.folder, m.get("files") or {})  # manifests from before files were recorded: {}
        if not bad:
            return recorded, None
        said = "; ".join(f"{name}: {what}" for name, what in bad[:3])
        return recorded, f"{said}{f' (and {len(bad) - 3} more)' if len(bad) > 3 else ''}"

    def discard(self) -> None:
        """Forget a damaged build: its folder goes (a training stage then trains again from
        scratch), or, for the evaluate stage, only its manifest."""
        if self.owns_folder:
            rmtree(self.folder)
        else:
            (self.folder / layout.MANIFEST).unlink(missing_ok=True)

    def manifest_for(self, counts: dict, seconds: float, files: dict[str, dict]) -> dict:
        return {"stage": self.name, "fingerprint": self.fingerprint, "code_version": code_version(),
                "inputs": self.inputs, "values": self.values, "counts": counts, "seconds": seconds,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}

    def commit(self, counts: dict, seconds: float, outputs: list[str]) -> None:
        """Training and evaluate stages: the finished folder gets its manifest, written last
        (atomically), with the size and sha256 of every file under `outputs` (names or patterns)."""
        files = file_record(self.folder, files_under(self.folder, outputs))
        write_json(self.manifest_for(counts, seconds, files), self.folder / layout.MANIFEST, indent=2)


def verify_stage(folder: str | Path) -> int:
    """Check every file a stage's manifest lists against its recorded size and sha256; returns
    how many were checked. A missing, truncated or edited file is an InputError naming them."""
    folder = location(folder)
    manifest = read_json(folder / layout.MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise InputError("lists no files (a stage built before files were recorded, or not a manifest)",
                         path=folder / layout.MANIFEST)
    bad = check_files(folder, files, digests=True)
    if bad:
        raise InputError(f"{len(bad)} of {len(files)} files do not match the manifest: "
                         + "; ".join(f"{name}: {what}" for name, what in bad[:5]), path=folder)
    return len(files)


def verify_pipeline(run_dir: str | Path) -> list[tuple[str, int]]:
    """`verify_stage` for each stage a pipeline's run folder names in its pipeline.json, the run
    folder's own manifest last; returns (folder, files checked) for each. Every damaged stage is
    named in one InputError."""
    run_dir = location(run_dir)
    report = read_json(run_dir / layout.PIPELINE)
    stages = report.get("stages") if isinstance(report, dict) else None
    if not isinstance(stages, dict):
        raise InputError("not a pipeline report (no \"stages\")", path=run_dir / layout.PIPELINE)
    folders = [location(e["folder"]) for name, e in stages.items()
               if name != "evaluate" and isinstance(e, dict) and e.get("folder")]
    checked, damaged = [], []
    for folder in [*folders, run_dir]:
        if not (folder / layout.MANIFEST).exists():
            damaged.append(f"{folder}: no {layout.MANIFEST} (unfinished, or removed)")
            continue
        try:
            checked.append((str(folder), verify_stage(folder)))
        except InputError as e:
            damaged.append(str(e))
    if damaged:
        raise InputError(f"{len(damaged)} of {len(folders) + 1} stage folders do not hold what their manifests "
                         "recorded: " + " | ".join(damaged), path=run_dir)
    return checked


class Building:
    """Where a data stage writes. On a local disk: a temporary folder, renamed into place with its
    manifest on success; a killed build leaves only the temporary folder, which the next run
    removes. In an object store: the stage's folder itself, emptied first, with the manifest
    written last; a killed build leaves files without a manifest, which the next run removes."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.in_place = isinstance(stage.folder, RemotePath)
        self.tmp = stage.folder if self.in_place else stage.folder.parent / f".{stage.folder.name}.tmp"

    def __enter__(self) -> Location:
        if not self.in_place:
            rmtree(self.tmp)
        rmtree(self.stage.folder)  # an older build without a matching manifest
        self.tmp.mkdir(parents=True)
        return self.tmp

    def commit(self, counts: dict, seconds: float) -> None:
        """The manifest, listing every file built, then (on a local disk) the rename into place."""
        files = file_record(self.tmp, files_under(self.tmp))
        write_json(self.stage.manifest_for(counts, seconds, files), self.tmp / layout.MANIFEST, indent=2)
        if not self.in_place:
            os.replace(self.tmp, self.stage.folder)

    def __exit__(self, *exc) -> None:
        if not self.in_place:
            rmtree(self.tmp)


def _budget(conf: Config, epochs: int | None, encoder_lr: float | None, head_lr: float | None) -> None:
    t = conf.train
    t.epochs = epochs if epochs is not None else t.epochs
    t.encoder_lr = encoder_lr if encoder_lr is not None else t.encoder_lr
    t.head_lr = head_lr if head_lr is not None else t.head_lr


def stage_configs(conf: Config) -> dict[str, Config]:
    """The `kddocre train` config of each training stage, derived from the pipeline's config.
    Each carries only what its stage depends on: the teacher has no distillation settings (a
    changed KD weight must not retrain it), the student streams the corpus rows (with soft
    labels unless kd = none), fine-tuning starts from the student's weights; the schedule itself
    (`pipeline:`) is no stage's setting, but the student keeps the window its rows stream in.
    The folders they read (`data.train_rows`, `train.init_from`) are set by `plan` once known."""
    p = conf.pipeline
    teacher = copy.deepcopy(conf)
    teacher.distill, teacher.pipeline = DistillConfig(), PipelineConfig()

    student = copy.deepcopy(conf)
    student.distill = DistillConfig(kd=conf.distill.kd, weight=conf.distill.weight,
                                    temperature=conf.distill.temperature)
    student.pipeline = PipelineConfig(window=p.window)
    # init_from "last": no dev split, so the checkpoint kept is the last epoch's; "best": by dev F1
    student.data.dev = conf.data.dev if p.init_from == InitFrom.best else None
    student.data.test = None
    _budget(student, p.pretrain_epochs, p.pretrain_encoder_lr, p.pretrain_head_lr)

    finetune = copy.deepcopy(conf)
    finetune.distill, finetune.pipeline = DistillConfig(), PipelineConfig()
    _budget(finetune, p.finetune_epochs, p.finetune_encoder_lr, p.finetune_head_lr)
    for c in (student, finetune):
        c.scale.num_workers = p.student_workers or c.scale.num_workers
        c.train.strategy = p.student_strategy or c.train.strategy
        c.train.deepspeed_config = p.student_deepspeed_config or c.train.deepspeed_config
    for c in (teacher, student, finetune):
        c.output_dir = str(location(conf.output_dir) / layout.STAGES)
    return {"teacher": teacher, "student": student, "finetune": finetune}


# Folders a training stage reads from an upstream stage: in its fingerprint through `inputs`.
STAGE_INPUT_KEYS = ("data.train_rows", "train.init_from")


def _train_stage(name: str, conf: Config, inputs: dict[str, str], stages_dir: Location) -> Stage:
    values = result_values(conf, exclude=STAGE_INPUT_KEYS)
    fp = digest({"values": values, "inputs": inputs, "code": code_version()})
    folder = stages_dir / f"{name}-{fp}"
    conf.name = folder.name
    return Stage(name, fp, folder, conf, inputs, values)


def plan(conf: Config, until: str | None = None) -> list[Stage]:
    """Every stage of this pipeline, with its fingerprint and folder, in order; with `until`,
    the stages up to and including that one (a sweep's teacher trials, or the stages a KD sweep's
    trials share). NA (kd = none) needs no teacher: its student reads the ingested rows and
    stages 1-2 are left out."""
    d, p = conf.distill, conf.pipeline
    if until is not None and until not in STAGES:
        raise InputError(f"no pipeline stage {until!r}; the stages are {STAGES}")
    if d.kd == KD.none and until in ("teacher", "soft_labels"):
        raise InputError(f"distill.kd=none (NA) has no {until} stage")
    stages_dir = location(conf.output_dir) / layout.STAGES
    configs = stage_configs(conf)
    out: list[Stage] = []
    if d.kd != KD.none:
        out.append(_train_stage("teacher", configs["teacher"], {}, stages_dir))
        if until == "teacher":
            return out
    if not p.corpus:
        raise InputError("pipeline.corpus is not set: the pipeline needs a distantly labelled corpus "
                         "(DocRED JSON, e.g. from `kddocre distant`)")
    ingest_values = {"corpus": path_digest(p.corpus), "encoder": encoder_identity(conf.model.encoder),
                     "rel_info": path_digest(conf.data.rel_info), "skip_bad_docs": conf.data.skip_bad_docs,
                     "facts": path_digest(p.facts) if p.facts else None}
    fp = digest({"values": ingest_values, "code": code_version()})
    rows = Stage("ingest", fp, stages_dir / f"ingest-{fp}", values=ingest_values)
    out.append(rows)
    if d.kd != KD.none:
        inputs = {"teacher": out[0].fingerprint, "ingest": rows.fingerprint}
        fp = digest({"inputs": inputs, "code": code_version()})
        rows = Stage("soft_labels", fp, stages_dir / f"soft_labels-{fp}", inputs=inputs)
        out.append(rows)
    student = _train_stage("student", configs["student"], {rows.name: rows.fingerprint}, stages_dir)
    student.conf.data.train_rows = str(rows.folder)
    finetune = _train_stage("finetune", configs["finetune"], {"student": student.fingerprint}, stages_dir)
    finetune.conf.train.init_from = str(student.folder)
    inputs = {"finetune": finetune.fingerprint}
    evaluate = Stage("evaluate", digest({"inputs": inputs, "code": code_version()}),
                     location(conf.output_dir) / conf.name, inputs=inputs, owns_folder=False)
    stages = [*out, student, finetune, evaluate]
    return stages[:[s.name for s in stages].index(until) + 1] if until else stages


def encoder_identity(name: str) -> str:
    """A named encoder (minilm, a hub name) by name; a folder by the digest of its files."""
    return "sha256:" + path_digest(name) if Path(name).exists() else name
