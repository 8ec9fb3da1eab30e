"""Ingest: a DocRED corpus file -> validated, featurized Parquet shards (layout in rows.py).

A DocRED JSON array (or .json.gz) is one unsplittable block to Ray Data, and Ray Data keeps no
row index or order, so the corpus is read and validated once here (bad documents are reported
and, with `skip_bad`, skipped and counted), each kept document gets its index in the file, and
documents with fewer than two entities (no pair: a batch of them would make the loss's mean
NaN) are dropped and counted. Featurizing runs in Ray tasks, one per shard.
"""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import ray

from ..data.distant import distant_label, load_facts
from ..data.docred import RelSchema, read_docs
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
    docs, bad = read_docs(path, schema, skip_bad=skip_bad)
    report_skipped(path, bad, log)
    distant = {}
    if facts:
        docs, stats = distant_label(docs, load_facts(facts, schema))
        distant = {"distant_labels": stats.labels, "distant_pairs": stats.pairs,
                   "distant_labelled_documents": stats.labelled_documents}
    bad_index = {err.index for err in bad}
    indices = [i for i in range(len(docs) + len(bad)) if i not in bad_index]
    keep = [(i, d) for i, d in zip(indices, docs) if len(d["vertexSet"]) >= 2]
    no_pairs = len(docs) - len(keep)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    task = ray.remote(_featurize_shard)
    pending = [task.remote([d for _, d in keep[k:k + rows_per_shard]], [i for i, _ in keep[k:k + rows_per_shard]],
                           corpus, encoder, schema, str(out_dir / f"part-{k // rows_per_shard:05d}.parquet"))
               for k in range(0, len(keep), rows_per_shard)]
    done, tokens = 0, 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        tokens += ray.get(ready[0])
        done += 1
        log(f"[kddocre] ingest {Path(path).name}: {done} shards written, {len(pending)} to go")
    stats = {"corpus": corpus, "documents": len(docs) + len(bad), "bad_documents": len(bad),
             "no_pair_documents": no_pairs, "rows": len(keep), "tokens": tokens,
             "shards": -(-len(keep) // rows_per_shard), "seconds": time.time() - t0, **distant}
    log(f"[kddocre] ingest {Path(path).name}: {stats['rows']} documents kept of {stats['documents']} "
        f"({len(bad)} bad, {no_pairs} with fewer than two entities)")
    return stats


def _featurize_shard(docs: list[dict], indices: list[int], corpus: str, encoder: str, schema: RelSchema,
                     out: str) -> int:
    from ..model.encoder import load_tokenizer

    tokenizer = load_tokenizer(encoder)
    feats = [doc_features(d, tokenizer, schema) for d in docs]
    pq.write_table(feature_table(feats, corpus, indices), out)
    return sum(len(f.input_ids) for f in feats)
