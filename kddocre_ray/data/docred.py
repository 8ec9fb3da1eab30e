"""Read, validate and write DocRED-format documents.

Validation happens once, at load time, so that every later stage (features,
training, scoring) can index ``sents``, ``vertexSet`` and ``labels`` without
defensive checks, and so that a bad document is reported by file, index,
title and field instead of surfacing as an IndexError deep in training.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..errors import InputError
from ..storage import iter_json_list, read_json, write_json

NA = "Na"  # class 0: the adaptive-threshold / no-relation class


@dataclass(frozen=True)
class RelSchema:
    """Relation ids in class order; class 0 is reserved for ``NA``."""

    relations: tuple[str, ...]
    names: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    source: str = field(default="", hash=False, compare=False)  # the file it came from, for messages

    @property
    def named_by(self) -> str:
        """" (rel_info.json)": where the schema came from, for a message; "" when unknown."""
        return f" ({self.source})" if self.source else ""

    def __post_init__(self) -> None:
        if NA in self.relations:
            raise ValueError(f"{NA!r} is reserved for class 0 and cannot be a relation")
        if len(set(self.relations)) != len(self.relations):
            raise ValueError("duplicate relation ids in schema")

    @cached_property
    def rel2id(self) -> dict[str, int]:
        """Relation id -> class index (``NA`` -> 0, relations from 1)."""
        return {NA: 0, **{r: i + 1 for i, r in enumerate(self.relations)}}

    @cached_property
    def id2rel(self) -> dict[int, str]:
        """Class index -> relation id, the inverse of ``rel2id``."""
        return {i: r for r, i in self.rel2id.items()}

    @property
    def num_classes(self) -> int:
        """Number of classifier outputs: every relation plus ``NA``."""
        return len(self.relations) + 1


def load_schema(path: str | os.PathLike) -> RelSchema:
    """Load DocRED ``rel_info.json`` (id -> name) or ATLOP ``rel2id.json`` (id -> int).

    ``rel2id.json`` ids must be exactly 1..n besides ``Na``: a checkpoint trained
    with that file expects those class indices, so gaps are an error, not renumbered.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError("expected a non-empty JSON object of relations", path=path)
    if "" in data:
        raise InputError("a relation id may not be empty", path=path, field='""')
    values = list(data.values())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if data.get(NA, 0) != 0:
            raise InputError(f"{NA!r} must be class 0 (the threshold class), not {data[NA]}", path=path, field=NA)
        ordered = sorted((i, r) for r, i in data.items() if r != NA)
        if [i for i, _ in ordered] != list(range(1, len(ordered) + 1)):
            raise InputError(f"relation ids must be 1..{len(ordered)} (with {NA!r} = 0)", path=path)
        relations, names = tuple(r for _, r in ordered), {}
    elif all(isinstance(v, str) for v in values):
        relations, names = tuple(r for r in data if r != NA), {r: n for r, n in data.items() if r != NA}
    else:
        raise InputError("values must be all relation names (str) or all class ids (int)", path=path)
    if not relations:
        raise InputError(f"no relation besides {NA!r}", path=path)
    return RelSchema(relations, names, str(path))


class DocError(InputError):
    """One invalid document: where it is (file, index, title, field) and what is wrong."""

    def __init__(self, field: str, message: str, *, path: str | os.PathLike | None = None,
                 index: int | None = None, title: str | None = None) -> None:
        super().__init__(message, path=path, index=index, title=title, field=field, what="document")

    def located(self, path: str | os.PathLike, index: int) -> DocError:
        """The same error, placed at document ``index`` of file ``path``."""
        return DocError(self.field, self.message, path=path, index=index, title=self.title)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_doc(doc: Any, schema: RelSchema, require_labels: bool = False) -> None:
    """Raise ``DocError`` (without file/index) at the first problem in ``doc``."""
    title = doc.get("title") if isinstance(doc, dict) and isinstance(doc.get("title"), str) else None

    def fail(where: str, message: str) -> None:
        raise DocError(where, message, title=title)

    if not isinstance(doc, dict):
        fail("document", f"expected an object, got {type(doc).__name__}")
    for key in ("title", "sents", "vertexSet") + (("labels",) if require_labels else ()):
        if key not in doc:
            fail(key, "missing")
    if title is None:
        fail("title", "expected a string")
    sents = doc["sents"]
    if not isinstance(sents, list):
        fail("sents", "expected a list of sentences")
    for i, sent in enumerate(sents):
        if not isinstance(sent, list) or not all(isinstance(tok, str) for tok in sent):
            fail(f"sents[{i}]", "expected a list of string tokens")

    entities = doc["vertexSet"]
    if not isinstance(entities, list) or not entities:
        fail("vertexSet", "expected a non-empty list of entities")
    for e, entity in enumerate(entities):
        if not isinstance(entity, list) or not entity:
            fail(f"vertexSet[{e}]", "expected a non-empty list of mentions")
        for m, mention in enumerate(entity):
            at = f"vertexSet[{e}][{m}]"
            if not isinstance(mention, dict):
                fail(at, "expected a mention object")
            for key, ok, kind in (("name", isinstance(mention.get("name"), str), "a string"),
                                  ("type", isinstance(mention.get("type"), str), "a string"),
                                  ("sent_id", is_int(mention.get("sent_id")), "an integer")):
                if not ok:
                    fail(f"{at}.{key}", "missing" if key not in mention else f"expected {kind}")
            sid, pos = mention["sent_id"], mention.get("pos")
            if not 0 <= sid < len(sents):
                fail(f"{at}.sent_id", f"sentence {sid} out of range (document has {len(sents)})")
            if not (isinstance(pos, list) and len(pos) == 2 and all(map(is_int, pos))):
                fail(f"{at}.pos", "missing" if "pos" not in mention else "expected [start, end] integers")
            start, end = pos
            if start >= end:
                fail(f"{at}.pos", f"empty span [{start}, {end})")
            if start < 0 or end > len(sents[sid]):
                fail(f"{at}.pos", f"span [{start}, {end}) outside sentence {sid} of length {len(sents[sid])}")

    if "labels" not in doc:
        return
    labels = doc["labels"]
    if not isinstance(labels, list):
        fail("labels", "expected a list")
    known = set(schema.relations)
    for k, label in enumerate(labels):
        at = f"labels[{k}]"
        if not isinstance(label, dict):
            fail(at, "expected a label object")
        for key in ("h", "t"):
            if key not in label:
                fail(f"{at}.{key}", "missing")
            if not is_int(label[key]):
                fail(f"{at}.{key}", "expected an integer entity index")
            if not 0 <= label[key] < len(entities):
                fail(f"{at}.{key}", f"entity {label[key]} out of range (document has {len(entities)})")
        if label["h"] == label["t"]:
            fail(at, f"head and tail are the same entity {label['h']}")
        if not isinstance(label.get("r"), str):
            fail(f"{at}.r", "missing" if "r" not in label else "expected a relation id string")
        if label["r"] not in known:
            fail(f"{at}.r", f"unknown relation {label['r']!r}: not in the schema{schema.named_by}")
        evidence = label.get("evidence", [])
        if not isinstance(evidence, list) or not all(map(is_int, evidence)):
            fail(f"{at}.evidence", "expected a list of sentence ids")
        for s in evidence:
            if not 0 <= s < len(sents):
                fail(f"{at}.evidence", f"sentence {s} out of range (document has {len(sents)})")


def iter_docs(path: str | os.PathLike, schema: RelSchema, *, skip_bad: bool = False,
              require_labels: bool = False) -> Iterator[tuple[int, dict | DocError]]:
    """Each document of a DocRED file with its index, read one at a time (storage.iter_json_list):
    a corpus of any size passes in flat memory. A bad document raises the error that names what is
    wrong with it; with ``skip_bad`` that error is yielded in its place, for the caller to report."""
    for i, doc in enumerate(iter_json_list(path, "documents")):
        try:
            validate_doc(doc, schema, require_labels)
        except DocError as exc:
            if not skip_bad:
                raise exc.located(path, i) from None
            yield i, exc.located(path, i)
        else:
            yield i, doc


def read_docs(path: str | os.PathLike, schema: RelSchema, *, skip_bad: bool = False,
              require_labels: bool = False, unique_titles: bool = False) -> tuple[list[dict], list[DocError]]:
    """Load and validate documents, unchanged.

    With ``skip_bad`` the bad documents are left out but returned as errors, so
    callers can report them: nothing is dropped silently. With ``unique_titles`` (a gold file:
    titles key the official scorer) two documents with one title are refused, both named.
    """
    docs, bad, seen = [], [], {}
    for i, doc in iter_docs(path, schema, skip_bad=skip_bad, require_labels=require_labels):
        if isinstance(doc, DocError):
            bad.append(doc)
            continue
        if unique_titles and doc["title"] in seen:
            raise DocError("title", f"also the title of document {seen[doc['title']]}: titles key the scorer, "
                           "so each must be unique", path=path, index=i, title=doc["title"])
        seen.setdefault(doc["title"], i)
        docs.append(doc)
    return docs, bad


def write_docs(docs: list[dict], path: str | os.PathLike) -> None:
    """Write documents as JSON (gzip for ``.gz``) atomically: all or nothing on disk."""
    write_json(docs, path)
