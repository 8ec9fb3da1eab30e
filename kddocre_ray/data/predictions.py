"""Prediction files (DocRED's submission format) read and checked against the gold documents
they are scored on, before any score is computed.

An entry is {"title": str, "h_idx": int, "t_idx": int, "r": relation id, "evidence": [sentence
ids], optional}. Its title must name a gold document, its relation be one of the schema's, its
entities two different ones of that document. A bad entry is an error naming it, or, when the
caller asks, a counted skip by kind; it is never scored as if it were a wrong prediction.
Duplicate triples count once, as in the official scorer, and are counted for the report.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .docred import RelSchema, is_int

KEYS = ("title", "h_idx", "t_idx", "r")
SHOWN = 3  # bad entries named in the error; the rest are counted


@dataclass
class Checked:
    preds: list[dict]  # the entries that passed, in file order (duplicates included)
    dropped: Counter = field(default_factory=Counter)  # kind of problem -> entries skipped
    duplicates: int = 0  # entries repeating an earlier (title, h_idx, t_idx, r)


def entry_problem(p: Any, docs: dict[str, dict], schema: RelSchema) -> tuple[str, str | None, str] | None:
    """(kind, field, what is wrong) of the first problem of one entry, or None."""
    if not isinstance(p, dict):
        return "not an object", None, f"expected an object with keys {', '.join(KEYS)}, got {type(p).__name__}"
    for key in KEYS:
        if key not in p:
            return "missing key", key, "missing"
    if not isinstance(p["title"], str):
        return "wrong type", "title", f"expected a string, got {json.dumps(p['title'])}"
    for key in ("h_idx", "t_idx"):
        if not is_int(p[key]):
            return "wrong type", key, f"expected an integer entity index, got {json.dumps(p[key])}"
    if not isinstance(p["r"], str):
        return "wrong type", "r", f"expected a relation id (string), got {json.dumps(p['r'])}"
    evidence = p.get("evidence", [])
    if not isinstance(evidence, list) or not all(is_int(s) for s in evidence):
        return "wrong type", "evidence", f"expected a list of sentence ids, got {json.dumps(evidence)}"
    doc = docs.get(p["title"])
    if doc is None:
        return "unknown title", "title", "no gold document has this title"
    if p["r"] not in schema.rel2id or p["r"] == schema.id2rel[0]:
        return "unknown relation", "r", f"{p['r']!r} is not a relation of the schema"
    n = len(doc["vertexSet"])
    for key in ("h_idx", "t_idx"):
        if not 0 <= p[key] < n:
            return "entity out of range", key, f"entity {p[key]} out of range (the document has {n})"
    if p["h_idx"] == p["t_idx"]:
        return "same entity", "t_idx", f"head and tail are both entity {p['h_idx']}"
    outside = [s for s in evidence if not 0 <= s < len(doc["sents"])]
    if outside:
        return "evidence out of range", "evidence", f"sentence {outside[0]} out of range (the document has " \
                                                    f"{len(doc['sents'])})"
    return None


def check_predictions(data: Any, gold_docs: list[dict], schema: RelSchema, path: str | os.PathLike,
                      skip_bad: bool = False) -> Checked:
    """The entries of a predictions file (already parsed) that can be scored against `gold_docs`.
    Bad ones raise InputError naming the first few and the count, or with `skip_bad` are dropped
    and counted by kind."""
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of predictions, got {type(data).__name__}", path=path)
    docs = {d["title"]: d for d in gold_docs}
    out, bad = Checked([]), []
    seen: set[tuple] = set()
    for i, p in enumerate(data):
        problem = entry_problem(p, docs, schema)
        if problem is not None:
            kind, key, message = problem
            title = p.get("title") if isinstance(p, dict) and isinstance(p.get("title"), str) else None
            bad.append(InputError(message, index=i, title=title, field=key))
            out.dropped[kind] += 1
            continue
        triple = (p["title"], p["h_idx"], p["t_idx"], p["r"])
        out.duplicates += triple in seen
        seen.add(triple)
        out.preds.append(p)
    if bad and not skip_bad:
        shown = "; ".join(str(e) for e in bad[:SHOWN])
        more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise InputError(f"{len(bad)} of {len(data)} predictions cannot be scored: {shown}{more} "
                         "(--skip-bad-preds scores the rest and counts them)", path=path)
    return out
