"""Ray Tune sweeps over config keys (`tune/sweep.py`, `kddocre sweep`): γ and the learning rates.

Each trial is the project's own training through Ray Train, run by a Tune function trainable
(Ray Train V2: `Tuner(trainer)` is gone; the trial function builds the `TorchTrainer`):

  teacher level  a trial trains a teacher: the pipeline's teacher stage with the trial's values,
                 stored by fingerprint in output_dir/stages/, so a pipeline run with the chosen
                 values later reuses it instead of training it again
  kd level       the sweep first builds (or finds) the stages its trials share (teacher, ingest,
                 soft labels); every trial then runs the rest of the pipeline (student, fine-tuning,
                 scores) with its values, and the shared stages are skipped, never recomputed

A trial reports each epoch of its reported stage (the teacher; the fine-tuning for KD) to Tune as
it ends, from the Ray Train controller (`StageToTune`), so ASHA can stop weak trials on dev F1.
The trial function holds no CPU of its own: its Train workers hold them, and as many trials
run at once as the cluster's CPUs (GPUs) hold. The sweep's driver is the only MLflow writer
(`TrialRuns`): one run per trial, named by trial, with the same parameter and metric names as
every other run, so the UI's compare and parallel-coordinates views line up.

The sweep folder output_dir/NAME holds config.yaml, Tune's state (tune/, `Tuner.restore` picks
an interrupted sweep up from it), the trials' run folders (trials/), results.csv / results.md,
plots/sweep.png (the metric per epoch per trial, and each trial's best), best.yaml (the best trial's whole config) and sweep.json.
"""
from __future__ import annotations

import copy
import csv
import io
import math
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from . import layout
from .cluster import init_ray
from .config import (
    KD,
    PAPER_GAMMA_GRID,
    Config,
    SweepConfig,
    SweepLevel,
    flatten,
    from_dict,
    is_dotted_key,
    read_resolved,
    to_dict,
    to_yaml,
    with_values,
    worker_cpus,
)
from .errors import InputError
from .fingerprint import NOT_RESULT_KEYS, changed_keys
from .pipeline import plots
from .pipeline.report import Reporters, RunReport
from .pipeline.run import check_inputs, run_pipeline
from .pipeline.stages import plan, stage_configs
from .storage import Location, location, read_json, upload, write_json, write_text

DISTRIBUTIONS = {"uniform": tune.uniform, "loguniform": tune.loguniform}
# The trial function only drives its Train workers, which hold the CPUs (GPUs). Tune takes no
# all-zero request, so the trial asks for a token of memory (1 MiB) and no CPU: by default a
# trial holds one CPU, and on a 2-core machine a Train worker asking for both then waits forever.
TRIAL_RESOURCES = {"cpu": 0, "memory": 1 << 20}
TUNE_DIR = "tune"


# -- the search space ---------------------------------------------------------------------------

def space_leaves(space: dict, prefix: str = "") -> dict[str, Any]:
    """`sweep.space` as dotted keys -> a list (grid) or {uniform|loguniform: [lo, hi]}; an empty
    space is the paper's γ grid. A grid at a section holds dicts, values that go together:
    train: [{encoder_lr: 0, head_lr: 0}, {encoder_lr: 3e-5, head_lr: 1e-4}]."""
    if not space and not prefix:
        return {"loss.gamma": list(PAPER_GAMMA_GRID)}
    out: dict[str, Any] = {}
    for k, v in space.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not v:
            raise InputError(f"sweep.space.{key}: an empty mapping; give a list of values (a grid) or "
                             "{uniform: [lo, hi]} / {loguniform: [lo, hi]}")
        if isinstance(v, dict) and not set(v) & set(DISTRIBUTIONS):
            out.update(space_leaves(v, key + "."))
        else:
            out[key] = v
    return out


def _spec(key: str, spec: Any) -> tuple[Any, list]:
    """A leaf as Tune's domain, and the values that stand for it in checks (a range's ends)."""
    where = f"sweep.space.{key}"
    if isinstance(spec, list):
        if not spec:
            raise InputError(f"{where}: an empty grid")
        return tune.grid_search(spec), spec
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, bounds), = spec.items()
        if kind in DISTRIBUTIONS and isinstance(bounds, list) and len(bounds) == 2 \
                and all(isinstance(b, (int, float)) for b in bounds) and bounds[0] < bounds[1] \
                and (kind != "loguniform" or bounds[0] > 0):
            return DISTRIBUTIONS[kind](*bounds), bounds
    raise InputError(f"{where}: {spec!r}; give a list of values (a grid) or {{uniform: [lo, hi]}} / "
                     "{loguniform: [lo, hi]} with lo < hi (lo > 0 for loguniform)")


def search_space(conf: Config) -> dict[str, Any]:
    return {key: _spec(key, spec)[0] for key, spec in space_leaves(conf.sweep.space).items()}


def reported_stage(conf: Config) -> str:
    """The stage whose epochs a trial reports to Tune (and ASHA judges)."""
    return "teacher" if conf.sweep.level == SweepLevel.teacher else "finetune"


def shared_stage(conf: Config) -> str:
    """The last stage a KD sweep's trials share (NA has no teacher: only the ingested rows)."""
    return "ingest" if conf.distill.kd == KD.none else "soft_labels"


def check_space(conf: Config) -> None:
    """Before any work: every key is a config key taking those values; a teacher-level key changes
    what a teacher learns; a KD-level key leaves the shared teacher and soft labels as they are
    (else every trial would rebuild them); repeated trials are told apart."""
    s = conf.sweep
    leaves = space_leaves(s.space)
    if conf.data.dev is None:
        raise InputError(f"a sweep ranks its trials by {s.metric}: set data.dev")
    if s.level == SweepLevel.teacher and conf.distill.kd == KD.none:
        raise InputError("sweep.level=teacher with distill.kd=none: NA has no teacher")
    def fingerprints(c: Config, until: str) -> list[str]:
        return [st.fingerprint for st in plan(c, until=until)]

    shared = fingerprints(conf, shared_stage(conf)) if s.level == "kd" else []
    for key, spec in leaves.items():
        if not is_dotted_key(key):
            raise InputError(f"sweep.space.{key}: not a dotted config key (e.g. loss.gamma)")
        _, values = _spec(key, spec)
        teachers = set()
        for value in values:
            trial = with_values(conf, {key: value}, f"sweep.space.{key}")
            if s.level == "teacher":
                teachers.add(fingerprints(trial, "teacher")[0])
            elif fingerprints(trial, shared_stage(conf)) != shared:
                raise InputError(f"sweep.space.{key}={value!r} changes the teacher or the soft labels, which the "
                                 "trials of a KD-level sweep share: sweep it at sweep.level=teacher")
        if s.level == "teacher" and len(teachers) < len({repr(v) for v in values}):
            raise InputError(f"sweep.space.{key}: its values do not all train different teachers (a distill.* key, "
                             "or one that does not change results?): sweep distillation keys at sweep.level=kd")
    sampled = any(isinstance(spec, dict) for spec in leaves.values())
    if s.num_samples > 1 and not sampled and "train.seed" not in leaves:
        raise InputError("sweep.num_samples > 1 over a grid repeats identical trials (they would share their "
                         "stage folders): put train.seed in sweep.space to repeat with other seeds")


def trial_config(base: Config, values: dict[str, Any], trial_name: str) -> Config:
    """A trial's config: the sweep's, with the trial's values, its run folder under trials/, and
    no MLflow logging of its own (the sweep's driver logs every trial)."""
    conf = with_values(base, values, "trial")
    conf.name = f"{base.name}/{layout.TRIALS}/{trial_name}"
    conf.tracking.enabled = False
    return conf


# -- inside a trial -----------------------------------------------------------------------------

class StageToTune(TuneReportCallback):
    """Ray Train callback (in the controller): each epoch of the reported stage to Tune as it
    ends, numbers only, with the stage's folder so the driver can find its final scores."""

    def __init__(self, folder: Location):
        super().__init__()
        self.folder = str(folder)

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        if metrics:
            super().after_report(run_context, [tune_result(metrics[0], self.folder)], None)


def tune_result(report: dict, folder: str) -> dict:
    return {**{k: v for k, v in report.items() if isinstance(v, (int, float)) and k != "score"},
            "stage_folder": folder}


class TrialReporter:
    """The pipeline's Reporter inside a trial: Tune hears the reported stage's epochs live; a
    stage found complete (a restored sweep, or the same values swept before) replays its history."""

    def __init__(self, stage: str, folder: Location):
        self.stage, self.folder = stage, folder

    def started(self, stage: str, fingerprint: str, params: dict) -> None:
        pass

    def skipped(self, stage: str, fingerprint: str, folder: Location) -> None:
        if stage == self.stage:
            for epoch in read_json(folder / layout.METRICS)["history"]:
                tune.report(tune_result(epoch, str(folder)))

    def finished(self, stage: str, folder: Location, metrics: dict, history: list[dict], files: list[str]) -> None:
        pass

    def callbacks(self, stage: str) -> list:
        return [StageToTune(self.folder)] if stage == self.stage else []

    def ended(self, metrics: dict | None) -> None:
        pass


def run_trial(values: dict, base: dict) -> None:
    """Tune's function trainable: one trial, through the pipeline's own stages."""
    ctx = tune.get_context()
    sweep = from_dict(base)
    conf = trial_config(sweep, values, ctx.get_trial_name())
    stage = reported_stage(sweep)
    until = "teacher" if stage == "teacher" else None
    folder = next(s.folder for s in plan(conf, until) if s.name == stage)
    run_dir = location(conf.output_dir) / conf.name
    run_dir.mkdir(parents=True, exist_ok=True)
    reporter = Reporters(RunReport(run_dir), TrialReporter(stage, folder))
    run_pipeline(conf, reporter=reporter, until=until)


# -- the sweep's driver ---------------------------------------------------------------------------

class TrialRuns(tune.Callback):
    """One MLflow run per trial, written by the sweep's driver alone: the trial's whole config as
    parameters, each epoch's metrics at step = epoch, then its final scores and files. The
    trial -> run ids are kept in the sweep folder, so a restored sweep continues its runs."""

    def __init__(self, base: dict, sweep_dir: Location):
        self.base, self.sweep_dir = base, sweep_dir
        self.path = sweep_dir / layout.TRIAL_RUNS
        self.tracker = None  # made on first use: Tune pickles its callbacks with the sweep's state
        self.best: dict[str, float] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "tracker": None}

    def _tracker(self):
        if self.tracker is None:
            from .tracking import Tracker

            self.tracker = Tracker(from_dict(self.base).tracking.experiment)
        return self.tracker

    def _runs(self) -> dict[str, str]:
        return read_json(self.path) if self.path.exists() else {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        from .tracking import continued_run, flat_params, git_commit

        t, runs = self._tracker(), self._runs()

        def create() -> str | None:
            base = from_dict(self.base)
            conf = trial_config(base, trial.config, str(trial))
            run_id = t.create_run(f"{base.name}/{trial}", tags={
                "kddocre.sweep": base.name, "kddocre.sweep_level": str(base.sweep.level), "kddocre.trial": str(trial),
                "kddocre.run_dir": str(location(conf.output_dir) / conf.name), "mlflow.source.git.commit": git_commit()})
            t.log(run_id, params={k: v for k, v in flat_params(to_dict(conf)).items() if not k.startswith("sweep.")})
            return run_id

        run_id, continued = continued_run(t, runs, trial.trial_id, create)
        if run_id and not continued:
            write_json(runs, self.path, indent=2)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from ray.tune.result import AUTO_RESULT_KEYS

        from .tracking import epoch_metrics

        run_id = self._runs().get(trial.trial_id)
        metric = from_dict(self.base).sweep.metric
        if metric in result:
            self.best[trial.trial_id] = max(self.best.get(trial.trial_id, -math.inf), result[metric])
        ours = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS and k not in NOT_EPOCH_KEYS}
        self._tracker().log(run_id, metrics=epoch_metrics(ours), step=int(result.get("epoch", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, ok=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, ok=False)

    def _end(self, trial, ok: bool) -> None:
        from .tracking import final_scores

        t, run_id = self._tracker(), self._runs().get(trial.trial_id)
        folder = location((trial.last_result or {}).get("stage_folder", "/nonexistent"))
        metrics, tags = {}, {"kddocre.stage_folder": str(folder)}
        if (folder / layout.METRICS).exists():  # finished: the scores of its best checkpoint
            metrics = final_scores(read_json(folder / layout.METRICS))
            t.log_files(run_id, folder, [layout.METRICS, layout.CONFIG])
        elif ok:  # stopped early by the scheduler: the best epoch it reached
            tags["kddocre.stopped_early"] = "true"
            metric = from_dict(self.base).sweep.metric
            if trial.trial_id in self.best:
                metrics[f"best_{metric}"] = self.best[trial.trial_id]
        t.log(run_id, metrics=metrics, tags=tags)
        t.end(run_id, ok=ok)


NOT_EPOCH_KEYS = frozenset({"stage_folder", "iterations_since_restore", "checkpoint_dir_name", "trial_id",
                            "experiment_tag", "done", "should_checkpoint", "config", "epoch"})


def concurrent_trials(conf: Config) -> int:
    """As many trials as the cluster's CPUs (GPUs with scale.use_gpu) hold at once, so that
    trials never wait on each other's workers."""
    if conf.sweep.max_concurrent_trials:
        return conf.sweep.max_concurrent_trials
    configs = stage_configs(conf)
    stage_confs = [configs["teacher"]] if conf.sweep.level == "teacher" else [configs["student"], configs["finetune"]]
    workers = max(c.scale.num_workers for c in stage_confs)
    res = ray.cluster_resources()
    if conf.scale.use_gpu:
        return max(1, int(res.get("GPU", 0) // workers))
    return max(1, int(res.get("CPU", 1) // (workers * worker_cpus(conf.scale))))


def _scheduler(conf: Config):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = conf.sweep
    if s.scheduler == "fifo":
        return FIFOScheduler()
    configs = stage_configs(conf)
    epochs = configs[reported_stage(conf)].train.epochs
    # time is the stage's own epoch (not Tune's iteration count), so a trial resumed from its
    # Ray Train checkpoint after a restore is judged at the right rung
    # a trial that reaches the last epoch is left to finish on its own (stop_last_trials=False):
    # stopping it there would kill its Train run before the checkpoint is scored and committed
    return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(s.grace_period, epochs),
                         reduction_factor=s.reduction_factor, stop_last_trials=False)


def _refuse_changed(conf: Config, sweep_dir: Location) -> None:
    """A sweep folder holds one sweep: a rerun with other result-changing values (or another
    space) is refused with the keys named, instead of mixing two sweeps' trials."""
    saved = sweep_dir / layout.CONFIG
    if not saved.exists():
        return
    def keys(c: Config) -> dict:
        return {k: v for k, v in flatten(to_dict(c)).items() if k not in NOT_RESULT_KEYS}
    changed = changed_keys(keys(read_resolved(saved)), keys(conf))
    if changed:
        raise InputError(f"{sweep_dir} holds a sweep with another config ({'; '.join(changed)}): "
                         "give it another name, or remove that folder")


def trial_name(trial) -> str:
    """`trial_<id>`: the trial's folder, run folder and MLflow run name (its values are parameters)."""
    return f"trial_{trial.trial_id}"


def run_sweep(conf: Config, log=print) -> dict:
    """Run (or resume) the sweep; returns its summary (sweep.json): the table of trials and the best."""
    from ray.tune import RunConfig, TuneConfig, Tuner

    check_space(conf)
    check_inputs(conf, "teacher" if reported_stage(conf) == "teacher" else None)
    sweep_dir = location(conf.output_dir) / conf.name
    _refuse_changed(conf, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / layout.CONFIG).write_text(to_yaml(conf))
    init_ray(conf)
    if conf.sweep.level == "kd":  # the stages every trial shares, built once, before any trial
        shared = copy.deepcopy(conf)
        shared.name, shared.tracking.enabled = f"{conf.name}/shared", False
        log(f"[kddocre] sweep {conf.name}: the trials' shared stages, up to {shared_stage(conf)}")
        run_pipeline(shared, log=log, until=shared_stage(conf))

    base = to_dict(conf)
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base), TRIAL_RESOURCES)
    path = sweep_dir / TUNE_DIR
    if Tuner.can_restore(str(path)):
        log(f"[kddocre] sweep {conf.name}: resuming from {path}")
        tuner = Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        s = conf.sweep
        tuner = Tuner(
            trainable, param_space=search_space(conf),
            tune_config=TuneConfig(metric=s.metric, mode="max", scheduler=_scheduler(conf), num_samples=s.num_samples,
                                   max_concurrent_trials=concurrent_trials(conf), trial_name_creator=trial_name,
                                   trial_dirname_creator=trial_name),
            run_config=RunConfig(name=TUNE_DIR, storage_path=str(sweep_dir),
                                 callbacks=[TrialRuns(base, sweep_dir)] if conf.tracking.enabled else []))
    grid = tuner.fit()
    summary = summarize(conf, grid, sweep_dir)
    log(f"[kddocre] sweep {conf.name}: {len(summary['trials'])} trials\n{summary['table']}")
    if not summary["finished"]:
        unfinished = sum(r["status"] == "unfinished" for r in summary["trials"])
        log(f"[kddocre] sweep {conf.name} interrupted: {unfinished} trial(s) unfinished, so no best.yaml yet; "
            f"rerun the same command to resume it from {path}")
    elif summary["best"] is None:
        log(f"[kddocre] sweep {conf.name}: no trial reported {conf.sweep.metric}, so no best.yaml (see the errors above)")
    else:
        best = summary["best"]
        log(f"[kddocre] best: {best['trial']} {best['values']} {conf.sweep.metric} {best[conf.sweep.metric]:.2f}; "
            f"its config: {sweep_dir / layout.BEST}")
    return summary


def summarize(conf: Config, grid, sweep_dir: Location) -> dict:
    """Every trial (values, best and last epoch's metric, epochs run, test F1 when finished),
    best first; the best trial (Tune's pick over every epoch reported) and its whole config.
    An interrupted sweep (a trial neither finished, stopped nor failed) gets the table of what
    ran but no best: its best.yaml would name a winner the remaining epochs may change."""
    metric, keys = conf.sweep.metric, list(space_leaves(conf.sweep.space))
    finished = grid.num_terminated + grid.num_errors == len(grid)
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        if df is None or metric not in df:
            rows.append({"trial": result.path.rsplit("/", 1)[-1], "values": {k: result.config.get(k) for k in keys},
                         metric: None, "epochs": 0, "status": _status(result, {}, reported=False, finished=finished)})
            continue
        folder = location(df["stage_folder"].iloc[-1])
        scores = read_json(folder / layout.METRICS) if (folder / layout.METRICS).exists() else {}
        rows.append({"trial": result.path.rsplit("/", 1)[-1], "trial_id": result.metrics.get("trial_id"),
                     "values": {k: result.config.get(k) for k in keys}, metric: float(df[metric].max()),
                     "curve": [[int(e), float(v)] for e, v in zip(df["epoch"], df[metric]) if not math.isnan(v)],
                     "epochs": int(df["epoch"].max()),
                     "status": _status(result, scores, reported=True, finished=finished),
                     "test_f1": scores.get("test", {}).get("f1"), "test_ign_f1": scores.get("test", {}).get("ign_f1"),
                     "stage_folder": str(folder)})
    rows.sort(key=lambda r: -math.inf if r[metric] is None else r[metric], reverse=True)
    best = None
    if finished and any(r[metric] is not None for r in rows):
        best_result = grid.get_best_result(metric=metric, mode="max", scope="all")
        best = next(r for r in rows if r["trial"] == best_result.path.rsplit("/", 1)[-1])
        best_conf = trial_config(conf, best_result.config, best["trial"])
        best_conf.sweep, best_conf.tracking.enabled = SweepConfig(), conf.tracking.enabled
        best_conf.name = f"{conf.name}_best"
        write_text(sweep_dir / layout.BEST, to_yaml(best_conf))
    table = markdown_table(rows, keys, metric)
    write_text(sweep_dir / layout.RESULTS, table + "\n")
    _write_csv(rows, keys, metric, sweep_dir / "results.csv")
    with tempfile.TemporaryDirectory() as plot_dir:  # drawn here, then copied to the (maybe remote) folder
        plots.sweep(rows, metric, Path(plot_dir) / "sweep.png")
        upload(Path(plot_dir), sweep_dir / layout.PLOTS)
    summary = {"name": conf.name, "level": conf.sweep.level, "metric": metric, "finished": finished, "best": best,
               "trials": rows, "table": table}
    write_json(summary, sweep_dir / layout.SWEEP, indent=2)
    return summary


def _status(result, scores: dict, reported: bool, finished: bool) -> str:
    """A trial's end: done (scored), stopped early (ASHA), error, no result (it ended without
    reporting), or unfinished (the sweep was interrupted: Tune marks a result done only when the
    trial ended or its scheduler stopped it)."""
    if result.error:
        return "error"
    if scores:
        return "done"
    if not reported:
        return "no result" if finished else "unfinished"
    return "stopped early" if result.metrics.get("done") else "unfinished"


def markdown_table(rows: list[dict], keys: list[str], metric: str) -> str:
    def value(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    def score(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}"

    head = ["trial", *keys, f"best {metric}", "epochs", "status", "test F1", "test Ign F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["trial"], *(value(r["values"][k]) for k in keys), score(r[metric]), str(r["epochs"]), r["status"],
                 score(r.get("test_f1")), score(r.get("test_ign_f1"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(rows: list[dict], keys: list[str], metric: str, path: Location) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", *keys, f"best_{metric}", "epochs", "status", "test_f1", "test_ign_f1", "stage_folder"])
    for r in rows:
        w.writerow([r["trial"], *(r["values"][k] for k in keys), r[metric], r["epochs"], r["status"],
                    r.get("test_f1"), r.get("test_ign_f1"), r.get("stage_folder")])
    write_text(path, buf.getvalue())
