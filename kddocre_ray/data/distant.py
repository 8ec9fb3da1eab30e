"""Distant labels by exact name matching against a fact base.

This reproduces DocRED's distant supervision with the training facts as the
knowledge base: an entity pair gets relation r whenever any of their mention
names form a known fact. The labels are noisy and sparse by construction.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError
from ..storage import iter_json_list
from .docred import RelSchema

Fact = tuple[str, str, str]  # (head name, tail name, relation id)


@dataclass
class DistantStats:
    """Counts of what ``distant_label`` produced, for reporting."""

    documents: int = 0
    labelled_documents: int = 0
    pairs: int = 0
    labels: int = 0


def load_facts(path: str | os.PathLike, schema: RelSchema | None = None) -> set[Fact]:
    """Read a fact file: a JSON list of ``[head name, tail name, relation id]`` (DocRED's
    ``ref/train_annotated.fact``); the one reader of fact files, for distant labels and Ign F1.
    With `schema`, a relation it does not have is an error naming the fact (a fact file of
    another dataset would otherwise label nothing, or never match, silently)."""
    facts = set()
    for i, fact in enumerate(iter_json_list(path, "facts")):
        if not (isinstance(fact, list) and len(fact) == 3 and all(isinstance(x, str) for x in fact)):
            raise InputError(f"expected [head name, tail name, relation id], got {json.dumps(fact)}", path=path,
                             index=i, what="fact")
        if schema is not None and fact[2] not in schema.relations:
            raise InputError(f"relation {fact[2]!r} is not in the schema{schema.named_by}", path=path, index=i,
                             what="fact")
        facts.add(tuple(fact))
    return facts


class DistantLabeller:
    """Labels documents one at a time against a fact base indexed once, counting what it did
    (`stats`), so a corpus streams through it."""

    def __init__(self, facts: Iterable[Fact]):
        self.by_pair: dict[tuple[str, str], set[str]] = defaultdict(set)
        for head, tail, rel in facts:
            self.by_pair[head, tail].add(rel)
        self.stats = DistantStats()

    def __call__(self, doc: dict) -> dict:
        """A shallow copy of `doc` whose labels are the distant labels, ordered by (h, t, r), no evidence."""
        names = [{m["name"] for m in entity} for entity in doc["vertexSet"]]
        labels = []
        for h, h_names in enumerate(names):
            for t, t_names in enumerate(names):
                if h == t:
                    continue
                rels = set().union(*(self.by_pair.get((hn, tn), ()) for hn in h_names for tn in t_names))
                labels += [{"h": h, "t": t, "r": r, "evidence": []} for r in sorted(rels)]
                self.stats.pairs += bool(rels)
        self.stats.documents += 1
        self.stats.labelled_documents += bool(labels)
        self.stats.labels += len(labels)
        return {**doc, "labels": labels}


def distant_label(docs: Iterable[dict], facts: Iterable[Fact]) -> tuple[list[dict], DistantStats]:
    """Return shallow copies of ``docs`` whose ``labels`` are the distant labels.

    Inputs are not modified; labels are ordered by (h, t, r) so the output is
    deterministic, and carry no evidence.
    """
    label = DistantLabeller(facts)
    return [label(doc) for doc in docs], label.stats
