"""The paper's method as one Ray job: teacher -> soft labels -> student pretraining -> fine-tuning
-> evaluation (`jobs/distill.py`, `kddocre distill`).

  teacher      `kddocre train` on the annotated split (Ray Train, DDP or DeepSpeed)
  ingest       the distant corpus validated and featurized into Parquet rows (Ray tasks)
  soft_labels  Ray Data streams the rows through a pool of teacher actors -> Parquet
  student      Ray Train on the streamed rows: L = L_RE(distant labels) + w * L_KD(teacher logits)
  finetune     Ray Train on the annotated split from the student's weights (init_from)
  evaluate     dev / test metrics, result.json and plots in the pipeline's run folder

Stages whose manifest matches are skipped (stages.py), so a rerun resumes where a killed one
stopped and pipelines differing only in the KD setting share the teacher and soft labels.
The run folder `output_dir/name` holds config.yaml, pipeline.json (every stage's folder,
fingerprint and status), and, when done, metrics.json, result.json, plots/ and manifest.json.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .. import layout
from ..checkpoint import point_to
from ..cluster import init_ray, submitted_job
from ..config import Config, StrategyName, actor_threads, flatten, missing_paths, to_dict, to_yaml
from ..data.distant import load_facts
from ..data.docred import DocError, iter_docs, load_schema
from ..errors import InputError
from ..evaluation import format_metrics
from ..storage import is_remote, location, read_json, upload, write_json
from ..train.inputs import check_deepspeed_file, check_train_inputs
from ..train.run import run_train
from ..train.trainer import start_cluster
from . import plots
from .report import Reporter, Reporters, RunReport
from .stages import Building, Stage, plan


def check_inputs(conf: Config, until: str | None = None) -> list[Stage]:
    """Fail before any work when an input is missing or bad, or the output folder would vanish:
    what each training stage reads (train/inputs.py), the student's DeepSpeed file, and, unless
    its ingest stage is already built, the corpus and its facts. Returns the plan (stages.plan)."""
    missing = missing_paths(conf)
    if missing:
        hint = (" (under `ray job submit` only the working directory is uploaded: name data by absolute or "
                "shared-storage paths)" if submitted_job() else "")
        raise FileNotFoundError(f"input files not found: {', '.join(missing)}{hint}")
    if (submitted_job() and not is_remote(conf.output_dir)
            and Path(conf.output_dir).resolve().is_relative_to(Path.cwd().resolve())):
        raise InputError(
            f"output_dir={conf.output_dir} is inside the job's working directory, Ray's temporary copy of the "
            "uploaded folder, which Ray deletes: pass --output-dir with an absolute or shared-storage path")
    schema = check_train_inputs(conf)
    stages = plan(conf, until)
    for stage in stages:
        if stage.conf is not None and stage.conf.train.strategy == StrategyName.deepspeed:
            check_deepspeed_file(stage.conf.train.deepspeed_config, stage.conf, stage.conf.scale.num_workers)
        if stage.name == "ingest" and not stage.recorded:
            p = conf.pipeline
            usable = False  # every document checked, one at a time: the corpus may not fit in memory
            for _, doc in iter_docs(p.corpus, schema, skip_bad=conf.data.skip_bad_docs):
                usable = usable or (not isinstance(doc, DocError) and len(doc["vertexSet"]) >= 2)
            if not usable:
                raise InputError("no document with two or more entities to learn from", path=p.corpus)
            if p.facts:
                load_facts(p.facts, schema)
    return stages


def run_pipeline(conf: Config, reporter: Reporter | None = None, log=print, until: str | None = None) -> dict:
    """Run (or resume) every stage, or those up to `until`; reports go to `pipeline.json`, the
    log and, unless `tracking.enabled` is false, MLflow (tracking.py) or to `reporter` alone.
    Returns the scores (metrics.json), or with `until` that stage's manifest counts."""
    stages = check_inputs(conf, until)
    run_dir = location(conf.output_dir) / conf.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / layout.CONFIG).write_text(to_yaml(conf))
    if reporter is None:
        reporter = RunReport(run_dir, log)
        if conf.tracking.enabled:
            from ..tracking import MlflowReporter

            reporter = Reporters(reporter, MlflowReporter(conf, run_dir, stages[-1].fingerprint, log))
    # start-up reads each manifest; a stage's files are listed once, when its turn comes (a
    # concurrent trial may finish a shared stage meanwhile)
    todo = [stage for stage in stages if not stage.recorded]
    if todo:  # a finished pipeline starts no cluster: its rerun answers at once
        init_ray(conf)
    for stage in todo:  # every training stage fits the cluster, before the first one starts
        if stage.conf is not None:
            start_cluster(stage.conf)
    log(f"[kddocre] pipeline {conf.name}: {' -> '.join(s.name for s in stages)}; stages in "
        f"{location(conf.output_dir) / 'stages'}")
    done: dict[str, Stage] = {}
    try:
        for stage in stages:
            recorded, damage = stage.state()
            if damage is not None:
                log(f"[kddocre] stage {stage.name} in {stage.folder} is damaged ({damage}): rebuilding it")
                stage.discard()
            if recorded and damage is None:
                reporter.skipped(stage.name, stage.fingerprint, stage.folder)
            else:
                init_ray(conf)  # started above, unless every stage was recorded and this one's files were damaged
                # a training stage reports its own derived config; a data stage what its fingerprint holds
                params = flatten(to_dict(stage.conf)) if stage.conf else stage.values
                reporter.started(stage.name, stage.fingerprint, params)
                metrics, history, files = RUNNERS[stage.name](conf, stage, done, log, reporter.callbacks(stage.name))
                reporter.finished(stage.name, stage.folder, metrics, history, files)
            done[stage.name] = stage
    except BaseException:
        reporter.ended(None)
        raise
    if until is not None:
        counts = stages[-1].manifest["counts"]
        reporter.ended(counts)
        return counts
    metrics = read_json(run_dir / layout.METRICS)
    reporter.ended(metrics)
    for split in ("dev", "test"):
        if split in metrics:
            log(f"[kddocre] {conf.name} {split}\n{format_metrics(metrics[split])}")
    return metrics


def headline(metrics: dict) -> dict:
    """F1 and Ign F1 of each scored split, as `dev_f1`, `test_ign_f1`, ..."""
    return {f"{split}_{k}": metrics[split][k] for split in ("dev", "test") if split in metrics for k in ("f1", "ign_f1")}


def _train(conf: Config, stage: Stage, done: dict, log, callbacks: list) -> tuple[dict, list, list]:
    """A training stage is `kddocre train` on the stage's derived config: a killed one resumes
    from its last Ray Train checkpoint; a finished run folder only lacks its manifest."""
    t0 = time.time()
    if (stage.folder / layout.METRICS).exists():
        metrics = read_json(stage.folder / layout.METRICS)
    else:
        metrics = run_train(stage.conf, log=log, callbacks=callbacks)
    final = headline(metrics)
    files = [layout.CHECKPOINT, layout.METRICS, layout.RESULT]
    stage.commit({**final, "train_time_s": metrics["train_time_s"], "precision": metrics["precision"]},
                 time.time() - t0, files)
    return final, metrics["history"], files


def _ingest(conf: Config, stage: Stage, done: dict, log, callbacks: list) -> tuple[dict, list, list]:
    from .ingest import ingest_corpus

    building = Building(stage)
    with building as tmp:
        p = conf.pipeline
        stats = ingest_corpus(p.corpus, load_schema(conf.data.rel_info), conf.model.encoder, tmp,
                              conf.data.skip_bad_docs, p.rows_per_shard, p.facts, log)
        if stats["rows"] == 0:
            raise InputError("no document with two or more entities to learn from", path=p.corpus)
        building.commit(stats, stats["seconds"])
    return stats, [], ["part-*.parquet"]


def _soft_labels(conf: Config, stage: Stage, done: dict, log, callbacks: list) -> tuple[dict, list, list]:
    from .soft_labels import write_soft_labels

    s = conf.soft_labels
    building = Building(stage)
    with building as tmp:
        stats = write_soft_labels(done["ingest"].folder, done["teacher"].folder, tmp, s.pool_size,
                                  conf.scale.use_gpu, actor_threads(conf.scale, s.pool_size), s.batch_size, log)
        building.commit(stats, stats["seconds"])
    return stats, [], ["*.parquet"]


def _evaluate(conf: Config, stage: Stage, done: dict, log, callbacks: list) -> tuple[dict, list, list]:
    """Copy the fine-tuned model's scores and predictions into the run folder, with plots."""
    t0 = time.time()
    finetune = done["finetune"].folder
    metrics = read_json(finetune / layout.METRICS)
    histories = {name: read_json(done[name].folder / layout.METRICS)["history"]
                 for name in ("teacher", "student", "finetune") if name in done}
    out = {"name": conf.name, "kd": str(conf.distill.kd), "stages": {s: str(done[s].folder) for s in done},
           "histories": histories, **{k: metrics[k] for k in ("dev", "test", "precision", "scoring") if k in metrics}}
    files = [layout.METRICS, layout.RESULT, f"{layout.PLOTS}/training.png"]
    with tempfile.TemporaryDirectory() as plot_dir:  # drawn here, then copied to the (maybe remote) folder
        plots.training_curves(histories, Path(plot_dir) / "training.png")
        for split in ("dev", "test"):
            if split in metrics:
                plots.breakdown(metrics[split], Path(plot_dir) / f"{split}_breakdown.png", f"{conf.name} {split}")
                files.append(f"{layout.PLOTS}/{split}_breakdown.png")
        upload(Path(plot_dir), stage.folder / layout.PLOTS)
    write_json(read_json(finetune / layout.RESULT), stage.folder / layout.RESULT)
    point_to(stage.folder, finetune / layout.CHECKPOINT)  # `kddocre predict --checkpoint RUN` uses it
    write_json(out, stage.folder / layout.METRICS, indent=2)
    final = headline(metrics)
    stage.commit(final, time.time() - t0, [*files, layout.MODEL])
    return final, [], files


RUNNERS = {"teacher": _train, "ingest": _ingest, "soft_labels": _soft_labels, "student": _train,
           "finetune": _train, "evaluate": _evaluate}
