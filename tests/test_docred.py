"""Tests for DocRED-format loading, validation and atomic writing."""
import copy
import json
from pathlib import Path

import pytest

from kddocre_ray.data.docred import NA, DocError, RelSchema, load_schema, read_docs, validate_doc, write_docs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not present")
SCHEMA = RelSchema(("P17", "P131"), {"P17": "country", "P131": "located in"})


def make_doc(title: str = "Doc") -> dict:
    return {
        "title": title,
        "sents": [["Paris", "is", "in", "France", "."], ["It", "is", "big", "."]],
        "vertexSet": [
            [{"name": "Paris", "pos": [0, 1], "sent_id": 0, "type": "LOC"},
             {"name": "It", "pos": [0, 1], "sent_id": 1, "type": "LOC"}],
            [{"name": "France", "pos": [3, 4], "sent_id": 0, "type": "LOC"}],
        ],
        "labels": [{"h": 0, "t": 1, "r": "P17", "evidence": [0]}],
    }


def test_load_schema_rel_info(tmp_path):
    path = tmp_path / "rel_info.json"
    path.write_text(json.dumps({"P6": "head of government", "P17": "country"}))
    schema = load_schema(path)
    assert schema.relations == ("P6", "P17")
    assert schema.names["P17"] == "country"
    assert schema.rel2id == {NA: 0, "P6": 1, "P17": 2}
    assert schema.id2rel[2] == "P17" and schema.num_classes == 3


def test_load_schema_rel2id_orders_by_id(tmp_path):
    path = tmp_path / "rel2id.json"
    path.write_text(json.dumps({"P17": 2, "Na": 0, "P1376": 1}))
    schema = load_schema(path)
    assert schema.relations == ("P1376", "P17")
    assert schema.rel2id == {NA: 0, "P1376": 1, "P17": 2}


def test_load_schema_rejects_gaps(tmp_path):
    path = tmp_path / "rel2id.json"
    path.write_text(json.dumps({"Na": 0, "P17": 2}))
    with pytest.raises(ValueError, match="rel2id.json"):
        load_schema(path)


def _set(doc, keys, value):
    target = doc
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value


BAD_CASES = {
    "missing title": (("title",), None, "title", "expected a string"),
    "sents not list": (("sents",), "text", "sents", "expected a list"),
    "token not str": (("sents", 1, 2), 7, "sents[1]", "string tokens"),
    "empty vertexSet": (("vertexSet",), [], "vertexSet", "non-empty"),
    "empty entity": (("vertexSet", 1), [], "vertexSet[1]", "non-empty"),
    "span outside": (("vertexSet", 0, 1, "pos"), [2, 9], "vertexSet[0][1].pos",
                     "span [2, 9) outside sentence 1 of length 4"),
    "empty span": (("vertexSet", 1, 0, "pos"), [3, 3], "vertexSet[1][0].pos", "empty span"),
    "pos wrong type": (("vertexSet", 1, 0, "pos"), "3-4", "vertexSet[1][0].pos", "integers"),
    "sent_id range": (("vertexSet", 1, 0, "sent_id"), 5, "vertexSet[1][0].sent_id", "out of range"),
    "sent_id type": (("vertexSet", 1, 0, "sent_id"), "0", "vertexSet[1][0].sent_id", "integer"),
    "name type": (("vertexSet", 1, 0, "name"), 3, "vertexSet[1][0].name", "string"),
    "h range": (("labels", 0, "h"), 2, "labels[0].h", "out of range"),
    "t type": (("labels", 0, "t"), True, "labels[0].t", "integer"),
    "self pair": (("labels", 0, "t"), 0, "labels[0]", "same entity"),
    "unknown relation": (("labels", 0, "r"), "P999", "labels[0].r", "unknown relation 'P999'"),
    "evidence range": (("labels", 0, "evidence"), [4], "labels[0].evidence", "out of range"),
    "labels not list": (("labels",), {}, "labels", "expected a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_document_is_located(tmp_path, case):
    keys, value, field, message = BAD_CASES[case]
    bad = make_doc("Bad one")
    _set(bad, keys, value)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([make_doc(), bad]))
    with pytest.raises(DocError) as info:
        read_docs(path, SCHEMA)
    err = info.value
    assert (err.path, err.index, err.field) == (path, 1, field)
    assert err.title == (None if case == "missing title" else "Bad one")
    assert message in err.message
    text = str(err)
    assert text.startswith(f"{path}: document 1")
    assert f": {field}: " in text and message in text
    if err.title:
        assert '("Bad one")' in text


def test_error_string_format():
    err = DocError("vertexSet[3][1].pos", "span [5, 9) outside sentence 2 of length 7",
                   path="dev.json", index=12, title="Title")
    assert str(err) == 'dev.json: document 12 ("Title"): vertexSet[3][1].pos: span [5, 9) outside sentence 2 of length 7'


def test_non_dict_and_missing_labels():
    with pytest.raises(DocError, match="expected an object"):
        validate_doc(["not", "a", "doc"], SCHEMA)
    doc = make_doc()
    del doc["labels"]
    validate_doc(doc, SCHEMA)
    with pytest.raises(DocError) as info:
        validate_doc(doc, SCHEMA, require_labels=True)
    assert info.value.field == "labels"


def test_skip_bad_returns_errors(tmp_path):
    docs = [make_doc("a"), make_doc("b"), make_doc("c"), make_doc("d")]
    docs[1]["labels"][0]["r"] = "P0"
    docs[3]["vertexSet"] = []
    path = tmp_path / "train.json"
    path.write_text(json.dumps(docs))
    good, bad = read_docs(path, SCHEMA, skip_bad=True)
    assert [d["title"] for d in good] == ["a", "c"]
    assert [(e.index, e.title, e.field) for e in bad] == [(1, "b", "labels[0].r"), (3, "d", "vertexSet")]


def test_file_level_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json"):
        read_docs(broken, SCHEMA)
    obj = tmp_path / "obj.json"
    obj.write_text("{}")
    with pytest.raises(ValueError, match="obj.json.*list"):
        read_docs(obj, SCHEMA)


def test_gzip_round_trip_and_sniffing(tmp_path):
    docs = [make_doc("é"), make_doc("b")]
    path = tmp_path / "out.json.gz"
    write_docs(docs, path)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert read_docs(path, SCHEMA) == (docs, [])
    disguised = tmp_path / "disguised.json"
    disguised.write_bytes(path.read_bytes())
    assert read_docs(disguised, SCHEMA)[0] == docs
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.json"
    write_docs([make_doc()], path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_docs([{"title": object()}], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_redocred_extra_keys_tolerated():
    doc = make_doc()
    for entity in doc["vertexSet"]:
        for m in entity:
            m.update(global_pos=m["pos"], index="0_0")
    doc["extra"] = 1
    original = copy.deepcopy(doc)
    validate_doc(doc, SCHEMA)
    assert doc == original


@needs_data
@pytest.mark.parametrize("name", ["re-docred/dev_revised.json", "docred/test.json"])
def test_real_files_load_clean(name):
    schema = load_schema(DATA / "docred" / "rel_info.json")
    assert schema.num_classes == 97
    docs, bad = read_docs(DATA / name, schema, skip_bad=True)
    assert bad == [] and len(docs) in (500, 1000)


# -- properties -----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JUNK = st.recursive(st.none() | st.booleans() | st.integers(-3, 9) | st.floats(allow_nan=False) |
                    st.sampled_from(["", "x", "P17", "Na", "0", "LOC"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["title", "sents", "vertexSet", "labels", "h", "t", "r", "pos", "sent_id",
                                         "name", "type", "evidence"]), inner, max_size=4),
                    max_leaves=8)


def _paths(node, at=()):
    """Every place in a JSON tree: the keys and indices that lead to it."""
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


@st.composite
def broken_docs(draw):
    """A valid document with up to three places replaced by junk, deleted, grown, or (integers)
    nudged."""
    doc = make_doc()
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "delete", "grow", "nudge", "nudge"]))
        paths = [p for p in _paths(doc) if action != "nudge" or type(_at(doc, p)) is int]
        at = draw(st.sampled_from(paths or [()]))
        junk = draw(JUNK)
        if not at:
            doc = junk
            continue
        parent = _at(doc, at[:-1])
        if action == "nudge":  # often still valid: another entity, span, sentence
            parent[at[-1]] = draw(st.integers(-1, 6))
        elif action == "delete":
            del parent[at[-1]]
        elif action == "grow" and isinstance(parent[at[-1]], list):
            parent[at[-1]].append(junk)
        else:
            parent[at[-1]] = junk
    return doc


def _at(node, path):
    for step in path:
        node = node[step]
    return node


@settings(max_examples=300, deadline=None)
@given(st.lists(broken_docs(), min_size=1, max_size=3) | st.lists(broken_docs() | JUNK, max_size=3) | JUNK)
def test_whatever_a_document_file_holds_the_reader_raises_only_input_error(tmp_path_factory, data):
    """Random malformed documents end in InputError naming the file; what the reader accepts the
    rest of the tools can use: features and label matrices build, the scorer scores it as gold."""
    from kddocre_ray.data.features import doc_features, label_matrix
    from kddocre_ray.errors import InputError
    from kddocre_ray.metrics import evaluate
    from kddocre_ray.model.encoder import load_tokenizer

    path = tmp_path_factory.mktemp("docs") / "docs.json"
    path.write_text(json.dumps(data))
    try:
        docs, _ = read_docs(path, SCHEMA)
    except InputError as e:
        assert str(e).startswith(f"{path}: ")
        return
    tokenizer = load_tokenizer("tiny-random")  # cached by transformers after the first call
    for doc in docs:
        feat = doc_features(doc, tokenizer, SCHEMA)
        assert label_matrix(feat, SCHEMA.num_classes).shape == (feat.n_entities * (feat.n_entities - 1),
                                                                SCHEMA.num_classes)
    assert evaluate([], docs, set(), [])["f1"] == 0
