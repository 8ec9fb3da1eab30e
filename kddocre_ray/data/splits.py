"""A config's data split as documents: read, validated, sliced, and every skipped one reported."""
from __future__ import annotations

from ..config import DataSource
from .docred import RelSchema, read_docs


def read_valid(path: str, schema: RelSchema, skip_bad: bool = False, log=print, unique_titles: bool = False,
               require_labels: bool = False) -> list[dict]:
    """Validated documents; with `skip_bad`, each skipped one is reported and counted."""
    docs, bad = read_docs(path, schema, skip_bad=skip_bad, unique_titles=unique_titles, require_labels=require_labels)
    report_skipped(path, bad, log)
    return docs


def report_skipped(path: str, bad: list, log=print) -> None:
    """Each skipped document with its file, index, title and field, then their count."""
    for err in bad:
        log(f"skipped bad document: {err}")
    if bad:
        log(f"{path}: skipped {len(bad)} bad documents")


def load_split(src: DataSource, schema: RelSchema, skip_bad: bool = False, log=print) -> list[dict]:
    return read_valid(src.path, schema, skip_bad, log)[src.start:src.end]
