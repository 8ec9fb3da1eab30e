"""Ingest: a DocRED corpus file -> validated, featurized Parquet shards (layout in rows.py).

A DocRED JSON array (or .json.gz) is one unsplittable block to Ray Data, and Ray Data keeps no
row index or order, so the driver streams the corpus once (storage.iter_json_list: it never holds
more than the shards in flight), validates each document (bad ones are reported and, with
`skip_bad`, skipped and counted), gives each kept one its index in the file, and drops and counts
those with fewer than two entities (no pair: a batch of them would make the loss's mean NaN).
Featurizing runs in Ray tasks, one per shard, at most a few at a time.
"""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import ray

from ..data.distant import DistantLabeller, load_facts
from ..data.docred import DocError, RelSchema, iter_docs
from ..data.features import doc_features
from ..data.rows import feature_table
from ..data.splits import report_skipped
from ..fingerprint import path_digest
from ..storage import Location


def ingest_corpus(path: str, schema: RelSchema, encoder: str, out_dir: Location, skip_bad: bool = False,
                  rows_per_shard: int = 1000, facts: str | None = None, log=print) -> dict:
    """Write `out_dir/part-NNNNN.parquet`; returns the counts a manifest records. With `facts`,
    the documents are first labelled by knowledge-base name matching (as `kddocre distant`
    does), replacing any labels they had."""
    corpus = path_digest(path)
    label = DistantLabeller(load_facts(facts, schema)) if facts else None
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    task = ray.remote(_featurize_shard)
    in_flight = max(2, int(ray.cluster_resources().get("CPU", 1)))  # each shard's documents wait in the object store
    bad, pending, shard, documents, no_pairs, shards, tokens = [], [], [], 0, 0, 0, 0

    def wait(at_most: int) -> None:
        nonlocal pending, tokens
        while len(pending) > at_most:
            ready, pending = ray.wait(pending, num_returns=1)
            tokens += ray.get(ready[0])
            log(f"[kddocre] ingest {Path(path).name}: {shards - len(pending)} shards written "
                f"({documents} documents read)")

    def submit() -> None:
        nonlocal shard, shards
        wait(in_flight - 1)
        pending.append(task.remote([d for _, d in shard], [i for i, _ in shard], corpus, encoder, schema,
                                   str(out_dir / f"part-{shards:05d}.parquet")))
        shard, shards = [], shards + 1

    for i, doc in iter_docs(path, schema, skip_bad=skip_bad):
        documents += 1
        if isinstance(doc, DocError):
            bad.append(doc)
            continue
        if label is not None:
            doc = label(doc)
        if len(doc["vertexSet"]) < 2:
            no_pairs += 1
            continue
        shard.append((i, doc))
        if len(shard) == rows_per_shard:
            submit()
    if shard:
        submit()
    wait(0)
    report_skipped(path, bad, log)
    rows = documents - len(bad) - no_pairs
    distant = {}
    if label is not None:
        s = label.stats
        distant = {"distant_labels": s.labels, "distant_pairs": s.pairs, "distant_labelled_documents": s.labelled_documents}
    stats = {"corpus": corpus, "documents": documents, "bad_documents": len(bad), "no_pair_documents": no_pairs,
             "rows": rows, "tokens": tokens, "shards": shards, "seconds": time.time() - t0, **distant}
    log(f"[kddocre] ingest {Path(path).name}: {rows} documents kept of {documents} "
        f"({len(bad)} bad, {no_pairs} with fewer than two entities)")
    return stats


def _featurize_shard(docs: list[dict], indices: list[int], corpus: str, encoder: str, schema: RelSchema,
                     out: str) -> int:
    from ..model.encoder import load_tokenizer

    tokenizer = load_tokenizer(encoder)
    feats = [doc_features(d, tokenizer, schema) for d in docs]
    pq.write_table(feature_table(feats, corpus, indices), out)
    return sum(len(f.input_ids) for f in feats)
