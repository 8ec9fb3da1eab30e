"""The names of what the tools write: one home for each, read and written through these names.

A training run, `OUTPUT_DIR/NAME/` (`kddocre train`, and each training stage of the pipeline):
  CONFIG        the resolved config
  FINGERPRINT   the result-changing config values: a resume with other values is refused
  RAY_DIR       Ray Train's checkpoints and snapshot (a rerun resumes from here)
  CHECKPOINT    the best model by dev F1 (a folder that reloads anywhere: checkpoint.py)
  RESULT        test predictions in DocRED submission format
  METRICS       dev and test metrics, history, timings; written last, it marks the run complete
  TRACKING      the MLflow run ids of this folder, so that a rerun continues them
A pipeline's run folder holds CONFIG, PIPELINE (every stage's folder, fingerprint and status),
MODEL (which model the folder stands for), and when done METRICS, RESULT and PLOTS. Its stages
live in `OUTPUT_DIR/STAGES/<stage>-<fingerprint>/`, each complete once its MANIFEST is there.
A sweep's folder holds CONFIG, SWEEP, RESULTS, BEST, PLOTS, TRIAL_RUNS and TRIALS/<trial>/.
"""
from __future__ import annotations

CONFIG = "config.yaml"
FINGERPRINT = "fingerprint.json"
RAY_DIR = "ray"
CHECKPOINT = "checkpoint"
RESULT = "result.json"
METRICS = "metrics.json"
TRACKING = "tracking.json"

PIPELINE = "pipeline.json"
MODEL = "model.json"
PLOTS = "plots"
STAGES = "stages"
MANIFEST = "manifest.json"

SWEEP = "sweep.json"
RESULTS = "results.md"
BEST = "best.yaml"
TRIALS = "trials"
TRIAL_RUNS = "mlflow_runs.json"
