"""`kddocre predict --ray`: a corpus of any size through the soft labels' actor pool, its triples
streamed to JSON Lines in the corpus's order.

The corpus is ingested as the pipeline ingests it (streamed, validated, featurized by Ray tasks
into Parquet shards beside the output), then Ray Data runs the shards through a pool of
`DocTriples` actors (`soft_labels.on_actor_pool`: GPUs when asked) and the driver writes each
batch's triples as it arrives, with documents/s and time left. No process holds the corpus; the
output appears, whole, only at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import ray
import torch

from ..checkpoint import ENCODER, read_schema, resolve_checkpoint
from ..data.rows import features_of
from ..errors import InputError
from ..heap import trim
from ..inference import Predictor
from ..progress import Progress
from .ingest import ingest_corpus
from .soft_labels import PoolOptions, on_actor_pool


class DocTriples:
    """A Ray Data actor: the model loaded once, then each row's triples (DocRED submission records)
    as one JSON string per document."""

    def __init__(self, checkpoint: str, threads: int):
        torch.set_num_threads(threads)
        self.predictor = Predictor.load(checkpoint)

    def __call__(self, table: pa.Table) -> pa.Table:
        triples = self.predictor.triples_by_doc(features_of(table))
        trim()
        return pa.table({"doc_index": table.column("doc_index"), "triples": [json.dumps(t) for t in triples]})


def predict_corpus(checkpoint: str | Path, data: str, out: str | Path, pool_size: int, use_gpu: bool = False,
                   threads: int = 1, batch_size: int = 8, skip_bad: bool = False, log=print) -> dict:
    """Write the triples of every document of `data` to `out` (JSON Lines, one triple a line, the
    documents in file order); returns counts."""
    out = Path(out)
    if out.is_dir():
        raise InputError("a folder: give the name of a file to write", path=out)
    folder = resolve_checkpoint(checkpoint)
    schema = read_schema(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # on the output's disk: one rename at the end
    context = ray.data.DataContext.get_current()
    ordered = context.execution_options.preserve_order
    try:
        stats = ingest_corpus(data, schema, str(folder / ENCODER), work / "rows", skip_bad=skip_bad, log=log)
        context.execution_options.preserve_order = True  # the output in the corpus's order
        ds = on_actor_pool(work / "rows", folder, pool_size, use_gpu, threads, batch_size, PoolOptions(actor=DocTriples))
        progress, triples = Progress("predict", stats["rows"], log=log), 0
        with open(work / "triples.jsonl", "w") as f:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for doc in batch.column("triples").to_pylist():
                    for t in json.loads(doc):
                        f.write(json.dumps(t, ensure_ascii=False) + "\n")
                        triples += 1
                progress.add(batch.num_rows)
        progress.end()
        os.replace(work / "triples.jsonl", out)
    finally:
        context.execution_options.preserve_order = ordered
        shutil.rmtree(work, ignore_errors=True)
    return {"documents": stats["documents"], "predicted": stats["rows"], "triples": triples,
            "bad_documents": stats["bad_documents"], "no_pair_documents": stats["no_pair_documents"]}
