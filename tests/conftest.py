"""Shared fixtures: the shipped sample, the shared benchmark data (when present), tiny encoder."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "kddocre_ray" / "sample"
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def schema():
    from kddocre_ray.data.docred import load_schema

    return load_schema(SAMPLE / "rel_info.json")


@pytest.fixture(scope="session")
def tokenizer():
    from kddocre_ray.model.encoder import load_tokenizer

    return load_tokenizer("tiny-random")


@pytest.fixture(scope="session")
def sample_docs(schema):
    from kddocre_ray.data.docred import read_docs

    return read_docs(SAMPLE / "train.json", schema)[0]


def make_doc(title: str = "doc", labels: list | None = None) -> dict:
    """John lives in Paris , France . -- three entities, one sentence."""
    return {
        "title": title,
        "sents": [["John", "lives", "in", "Paris", ",", "France", "."]],
        "vertexSet": [
            [{"name": "John", "pos": [0, 1], "sent_id": 0, "type": "PER"}],
            [{"name": "Paris", "pos": [3, 4], "sent_id": 0, "type": "LOC"}],
            [{"name": "France", "pos": [5, 6], "sent_id": 0, "type": "LOC"}],
        ],
        "labels": labels if labels is not None else [{"h": 1, "t": 2, "r": "P17", "evidence": [0]}],
    }
