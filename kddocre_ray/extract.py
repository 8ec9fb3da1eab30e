"""The Python face of a trained model: raw text (or DocRED documents) in, relation triples out.

    from kddocre_ray import Extractor
    Extractor.load("runs/my-run").extract(["Marie Curie was born in Warsaw. ..."])

A record names both entities (name, type, mentions with sentence and, for raw text, character
offsets), the relation (id and name) and its score: the relation's logit less the threshold
class's (a BCE model's: the logit itself), so a kept relation scores above 0. `kddocre extract`
and `kddocre predict` are thin shells over this class; it predicts through the one Predictor.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from .data.docred import validate_doc
from .data.text import Text, build_docs, load_nlp
from .decode import relations
from .errors import InputError
from .inference import Predictor

MENTION_KEYS = ("name", "sent_id", "pos", "start_char", "end_char")


def _texts(texts: Iterable[str | tuple[str, str] | dict | Text]) -> list[Text]:
    """Plain strings (titled "text 0", "text 1", ...), (title, text) pairs, {title, text} dicts or Texts."""
    out = []
    for i, t in enumerate(texts):
        if isinstance(t, Text):
            out.append(t)
        elif isinstance(t, str):
            out.append(Text(f"text {i}", t, "texts", i))
        elif isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t):
            out.append(Text(t[0], t[1], "texts", i))
        elif isinstance(t, dict) and isinstance(t.get("title"), str) and isinstance(t.get("text"), str):
            out.append(Text(t["title"], t["text"], "texts", i))
        else:
            raise InputError(f"expected a string, a (title, text) pair or a {{title, text}} dict, got {type(t).__name__}",
                             path="texts", index=i, what="item")
        if not out[-1].text.strip():
            raise InputError("the text is empty", path="texts", index=i, title=out[-1].title, what="item")
    return out


def entity_record(entity: list[dict]) -> dict:
    """An entity as a triple names it: its first mention's name, its type, every mention."""
    return {"name": entity[0]["name"], "type": entity[0]["type"],
            "mentions": [{k: m[k] for k in MENTION_KEYS if k in m} for m in entity]}


class Extractor:
    def __init__(self, predictor: Predictor, nlp=None):
        self.predictor, self._nlp = predictor, nlp

    @classmethod
    def load(cls, path: str | Path, device: torch.device | None = None, precision: str | None = None) -> Extractor:
        """From a run folder, a pipeline's run folder, a checkpoint or an exported folder."""
        return cls(Predictor.load(path, device=device, precision=precision))

    @property
    def schema(self):
        return self.predictor.schema

    @property
    def nlp(self):
        """spaCy's pipeline, loaded on first use (documents with entity annotations never need it)."""
        if self._nlp is None:
            self._nlp = load_nlp()
        return self._nlp

    def documents(self, texts: Iterable[str | tuple[str, str] | dict | Text]) -> list[dict]:
        """The DocRED documents built from raw texts: sentences, mentions, entities and their types."""
        return build_docs(_texts(texts), self.nlp)

    def extract(self, texts: Iterable[str | tuple[str, str] | dict | Text], min_score: float = 0.0) -> list[dict]:
        """Triples found in raw texts (see the module's docstring for a record)."""
        return self.predict(self.documents(texts), min_score)

    def predict(self, docs: list[dict], min_score: float = 0.0) -> list[dict]:
        """Triples of DocRED-format documents (entity annotations given; labels not needed), in the
        documents' order, each document's by head, tail and score. `min_score`: keep relations
        scoring above it (0: the model's own decision; below 0, less certain ones too)."""
        for i, d in enumerate(docs):
            try:
                validate_doc(d, self.schema)
            except InputError as e:
                raise InputError(e.message, path="docs", index=i, title=e.title, field=e.field, what="document") from None
        feats = self.predictor.features(docs)
        per_doc: list[list[dict]] = [[] for _ in docs]
        for i, keep, score in self.predictor.decoded(feats, min_score):
            entities = docs[i]["vertexSet"]
            for p, h, t, r in relations(keep, feats[i].n_entities):
                rel = self.schema.id2rel[r]
                per_doc[i].append({"title": docs[i]["title"], "head": entity_record(entities[h]),
                                   "tail": entity_record(entities[t]), "relation": rel,
                                   "relation_name": self.schema.names.get(rel, rel),
                                   "score": round(float(score[p, r]), 4), "h_idx": h, "t_idx": t})
        return [r for recs in per_doc for r in sorted(recs, key=lambda r: (r["h_idx"], r["t_idx"], -r["score"]))]

    def triples(self, docs: list[dict]) -> list[dict]:
        """DocRED submission records (title, h_idx, t_idx, r, evidence): what the scorer reads."""
        return self.predictor.predict_docs(docs)
