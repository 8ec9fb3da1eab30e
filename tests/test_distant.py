"""Tests for distant labelling by exact mention-name matching."""
import copy
import json
from pathlib import Path

import pytest

from kddocre_ray.data.distant import DistantStats, distant_label, load_facts
from kddocre_ray.data.docred import load_schema, read_docs, validate_doc
from kddocre_ray.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def mention(name: str, sent_id: int = 0) -> dict:
    return {"name": name, "pos": [0, 1], "sent_id": sent_id, "type": "X"}


DOC = {
    "title": "tiny",
    "sents": [["a", "b", "c"], ["d", "e"]],
    "vertexSet": [
        [mention("Paris"), mention("City of Light", 1)],
        [mention("France")],
        [mention("Seine")],
    ],
    "labels": [{"h": 2, "t": 1, "r": "P999", "evidence": [0]}],
}
FACTS = {
    ("City of Light", "France", "P17"),   # matched through the second mention name
    ("Paris", "France", "P131"),
    ("Paris", "France", "P17"),           # same pair and relation twice: one label
    ("France", "Paris", "P36"),           # reverse direction is its own fact
    ("Paris", "Paris", "P31"),            # would be a self-pair: never labelled
    ("Seine", "Paris", "P999"),           # unrelated direction for Seine
}


def test_distant_labels_exact():
    original = copy.deepcopy(DOC)
    out, stats = distant_label([DOC], FACTS)
    assert DOC == original and out[0] is not DOC
    assert out[0]["labels"] == [
        {"h": 0, "t": 1, "r": "P131", "evidence": []},
        {"h": 0, "t": 1, "r": "P17", "evidence": []},
        {"h": 1, "t": 0, "r": "P36", "evidence": []},
        {"h": 2, "t": 0, "r": "P999", "evidence": []},
    ]
    assert out[0]["vertexSet"] == DOC["vertexSet"]
    assert stats == DistantStats(documents=1, labelled_documents=1, pairs=3, labels=4)


def test_unlabelled_document_gets_empty_labels():
    doc = {k: v for k, v in DOC.items() if k != "labels"}
    out, stats = distant_label([doc], {("Nobody", "France", "P17")})
    assert out[0]["labels"] == [] and "labels" not in doc
    assert stats == DistantStats(documents=1, labelled_documents=0, pairs=0, labels=0)


def test_load_facts(tmp_path):
    path = tmp_path / "f.fact"
    path.write_text(json.dumps([["a", "b", "P1"], ["a", "b", "P1"], ["b", "a", "P2"]]))
    assert load_facts(path) == {("a", "b", "P1"), ("b", "a", "P2")}
    path.write_text(json.dumps([["a", "b"]]))
    with pytest.raises(InputError, match=r'f.fact: fact 0: expected \[head name, tail name, relation id\], got \["a", "b"\]'):
        load_facts(path)


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data not present")
def test_real_counts_match_benchmark():
    schema = load_schema(DATA / "docred" / "rel_info.json")
    docs, bad = read_docs(DATA / "docred" / "test.json", schema)
    facts = load_facts(DATA / "docred" / "ref" / "train_annotated.fact")
    out, stats = distant_label(docs, facts)
    assert stats == DistantStats(documents=1000, labelled_documents=750, pairs=3129, labels=4192)
    for got, expected in ((stats.labels, 4192), (stats.pairs, 3129), (stats.labelled_documents, 750)):
        assert abs(got - expected) <= 0.01 * expected
    for doc in out:
        validate_doc(doc, schema, require_labels=True)
