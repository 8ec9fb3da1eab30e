"""A run's model as an MLflow model: a pyfunc that wraps the exported folder (export.py) and nothing
else, logged on the run and registered under a name, so that

    mlflow models serve -m models:/NAME/VERSION --env-manager local

answers a POST of text with triples. Input: a DataFrame of `title` + `text` (raw text), or of
DocRED documents (`title`, `sents`, `vertexSet`); output: the Extractor's records.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from .export import export_model

ARTIFACT = "model"  # the run's artifact folder of the MLflow model
ENTRY = Path(__file__).with_name("mlflow_pyfunc.py")  # what MLflow runs to load the model (models from code)


def signature():
    """Columns a request may carry: title and text (raw text), or title, sents and vertexSet (DocRED
    documents); the parameter min_score (Extractor.predict); the output is a list of records,
    described in extract.py."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    return ModelSignature(inputs=Schema([ColSpec(DataType.string, "title"),
                                         ColSpec(DataType.string, "text", required=False),
                                         ColSpec(AnyType(), "sents", required=False),
                                         ColSpec(AnyType(), "vertexSet", required=False)]),
                          params=ParamSchema([ParamSpec("min_score", DataType.double, 0.0)]))


class TriplesModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: the exported folder loaded once per serving process, text or documents in."""

    def load_context(self, context) -> None:
        from .extract import Extractor

        self.extractor = Extractor.load(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        min_score = float((params or {}).get("min_score", 0.0))
        if "vertexSet" in frame.columns:
            return self.extractor.predict(frame[["title", "sents", "vertexSet"]].to_dict("records"), min_score)
        missing = {"title", "text"} - set(frame.columns)
        if missing:
            raise ValueError(f"expected columns title and text (raw text) or title, sents and vertexSet (DocRED "
                             f"documents); missing {sorted(missing)}")
        return self.extractor.extract(list(zip(frame["title"], frame["text"])), min_score)


def requirements() -> list[str]:
    """What a serving environment needs: this package with its [text] extra, at this version."""
    try:
        return [f"kddocre-ray[text]=={version('kddocre-ray')}"]
    except PackageNotFoundError:
        return ["kddocre-ray[text]"]


def log_model(client: mlflow.MlflowClient, run_id: str, checkpoint: str | Path, name: str) -> int:
    """Export `checkpoint`, log it on run `run_id` as an MLflow model and register it as `name`;
    returns the new version. The weights enter MLflow once: in this model, nowhere else."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file copied: noise in a run's log
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(checkpoint, Path(tmp) / "kddocre_model")
        model_dir = Path(tmp) / ARTIFACT
        # pip_requirements given: MLflow would otherwise load the model in a subprocess to infer them;
        # no input example: MLflow would load the model (and spaCy) to check it, and says so otherwise
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(model_dir, python_model=str(ENTRY), artifacts={"model": str(exported)},
                                     signature=signature(), pip_requirements=requirements())
        client.log_artifacts(run_id, str(model_dir), ARTIFACT)
    try:
        client.create_registered_model(name, description="KD-DocRE: text or DocRED documents in, relation triples out")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT}"
    return int(client.create_model_version(name, source, run_id=run_id).version)
