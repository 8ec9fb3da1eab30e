"""The predictions door (`kddocre evaluate --pred`): a file that is not a list of scorable entries
ends with status 2 and a message naming the file, the entry (index and title) and the field; with
--skip-bad-preds the rest is scored and the dropped ones are counted by kind; duplicate triples
count once and are reported; a gold file whose titles repeat is refused, both documents named.
Property-based: whatever a predictions file holds, the reader raises nothing but InputError, and
the scorer does not care about order or duplicates."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SAMPLE, make_doc
from kddocre_ray.cli import main
from kddocre_ray.data.docred import load_schema
from kddocre_ray.data.predictions import check_predictions
from kddocre_ray.errors import InputError
from kddocre_ray.metrics import evaluate

SCHEMA = load_schema(SAMPLE / "rel_info.json")
GOOD = {"title": "doc", "h_idx": 1, "t_idx": 2, "r": "P17", "evidence": [0]}  # the gold triple of make_doc()


def write(path, obj) -> str:
    """`obj` as JSON (a string as it is) at `path`; "folder" makes `path` a folder."""
    if obj == "folder":
        path.mkdir()
    else:
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def evaluate_cli(tmp_path, preds, gold=None, *extra) -> list[str]:
    gold = gold if gold is not None else [make_doc()]
    return ["evaluate", "--pred", write(tmp_path / "p.json", preds), "--gold", write(tmp_path / "gold.json", gold),
            "--facts", write(tmp_path / "f.json", []), "--json", *extra]


@pytest.mark.parametrize("preds, where, expected", [
    ({"title": "doc"}, "p.json", "expected a JSON list of predictions, got dict"),
    ('[{"title": "doc", "h_idx": 1', "p.json", "not a valid JSON file"),
    ([5], "entry 0", "expected an object with keys title, h_idx, t_idx, r, got int"),
    ([{k: v for k, v in GOOD.items() if k != "r"}], 'entry 0 ("doc"): r', "missing"),
    ([{**GOOD, "h_idx": "0"}], 'entry 0 ("doc"): h_idx', 'expected an integer entity index, got "0"'),
    ([{**GOOD, "t_idx": True}], 'entry 0 ("doc"): t_idx', "expected an integer entity index, got true"),
    ([{**GOOD, "title": 7}], "entry 0: title", "expected a string, got 7"),
    ([{**GOOD, "r": 17}], 'entry 0 ("doc"): r', "expected a relation id (string), got 17"),
    ([{**GOOD, "evidence": "0"}], 'entry 0 ("doc"): evidence', "expected a list of sentence ids"),
    ([GOOD, {**GOOD, "title": "nope"}], 'entry 1 ("nope"): title', "no gold document has this title"),
    ([{**GOOD, "r": "P999"}], 'entry 0 ("doc"): r', "'P999' is not a relation of the schema"),
    ([{**GOOD, "r": "Na"}], 'entry 0 ("doc"): r', "'Na' is not a relation of the schema"),
    ([{**GOOD, "t_idx": 3}], 'entry 0 ("doc"): t_idx', "entity 3 out of range (the document has 3)"),
    ([{**GOOD, "h_idx": -1}], 'entry 0 ("doc"): h_idx', "entity -1 out of range"),
    ([{**GOOD, "t_idx": 1}], 'entry 0 ("doc"): t_idx', "head and tail are both entity 1"),
    ([{**GOOD, "evidence": [0, 4]}], 'entry 0 ("doc"): evidence', "sentence 4 out of range (the document has 1)"),
    ("folder", "p.json", "a folder, where a JSON file was expected"),
], ids=["object", "truncated", "not-an-object", "missing-key", "index-as-string", "index-as-bool", "title-type",
        "relation-type", "evidence-type", "unknown-title", "unknown-relation", "na-relation", "index-too-large",
        "index-negative", "same-entity", "evidence-out-of-range", "a-folder"])
def test_a_bad_predictions_file_ends_with_status_2_naming_file_entry_and_field(tmp_path, capsys, preds, where,
                                                                                 expected):
    with pytest.raises(SystemExit) as e:
        main(evaluate_cli(tmp_path, preds))
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("kddocre evaluate: ") and "p.json" in err and where in err and expected in err
    assert "Traceback" not in err


def test_many_bad_entries_are_named_up_to_three_and_counted(tmp_path, capsys):
    preds = [GOOD, *({**GOOD, "title": f"t{i}"} for i in range(5))]
    with pytest.raises(SystemExit):
        main(evaluate_cli(tmp_path, preds))
    err = capsys.readouterr().err
    assert "5 of 6 predictions cannot be scored" in err
    assert 'entry 1 ("t0")' in err and 'entry 3 ("t2")' in err and 'entry 4 ("t3")' not in err
    assert "and 2 more" in err and "--skip-bad-preds" in err


def test_skip_bad_preds_scores_the_rest_and_counts_each_kind(tmp_path, capsys):
    bad = [{**GOOD, "title": "nope"}, {**GOOD, "title": "nope2"}, {**GOOD, "r": "P999"}, {**GOOD, "t_idx": 1}]
    main(evaluate_cli(tmp_path, [GOOD, *bad], None, "--skip-bad-preds"))
    out = capsys.readouterr()
    skipped = json.loads(out.out)
    main(evaluate_cli(tmp_path, [GOOD]))
    assert skipped == json.loads(capsys.readouterr().out)  # as if the bad entries were not there
    assert skipped["precision"] == 100.0 and skipped["recall"] == 100.0
    assert "skipped 4 predictions that cannot be scored (2 unknown title, 1 unknown relation, 1 same entity)" in out.err


def test_duplicate_triples_count_once_and_are_reported(tmp_path, capsys):
    """Gold (1, 2, P17). Predicted twice, plus one wrong triple twice: P = 1/2 (not 2/4 either way,
    but 1 correct of 2 distinct), R = 1."""
    wrong = {**GOOD, "h_idx": 0, "r": "P27"}
    main(evaluate_cli(tmp_path, [GOOD, wrong, GOOD, wrong]))
    out = capsys.readouterr()
    m = json.loads(out.out)
    assert (m["precision"], m["recall"]) == (50.0, 100.0)
    assert "2 duplicate triples counted once" in out.err


def test_a_gold_file_whose_titles_repeat_is_refused_naming_both_documents(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(evaluate_cli(tmp_path, [GOOD], [make_doc(), make_doc(title="other"), make_doc()]))
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert 'gold.json: document 2 ("doc"): title: also the title of document 0' in err


# -- properties -----------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) |
                    st.sampled_from(["doc", "P17", "Na", "x", "0"]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["title", "h_idx", "t_idx", "r", "evidence", "x"]), inner, max_size=6),
                    max_leaves=12)
ENTRY = st.fixed_dictionaries({"title": st.sampled_from(["doc", "other", "nope"]) | JSON,
                               "h_idx": st.integers(-1, 3) | JSON, "t_idx": st.integers(-1, 3) | JSON,
                               "r": st.sampled_from(["P17", "P27", "P131", "Na", "P0"]) | JSON})


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.lists(ENTRY | JSON, max_size=8)))
def test_whatever_a_predictions_file_holds_the_reader_raises_only_input_error(data):
    gold = [make_doc(), make_doc(title="other")]
    try:
        checked = check_predictions(data, gold, SCHEMA, "p.json")
    except InputError as e:
        assert str(e).startswith("p.json: ")
        return
    for p in checked.preds:  # what passes is scorable: a gold title, a relation, two entities of it
        assert p["title"] in {"doc", "other"} and p["r"] in SCHEMA.relations
        assert p["h_idx"] != p["t_idx"] and {p["h_idx"], p["t_idx"]} <= {0, 1, 2}
    assert evaluate(checked.preds, gold, set(), [])["f1"] >= 0


TRIPLE = st.fixed_dictionaries({"title": st.sampled_from(["doc", "other"]), "h_idx": st.integers(0, 2),
                                "t_idx": st.integers(0, 2), "r": st.sampled_from(["P17", "P27", "P131"])}).filter(
    lambda p: p["h_idx"] != p["t_idx"])


@settings(max_examples=200, deadline=None)
@given(st.lists(TRIPLE, max_size=10), st.randoms(use_true_random=False))
def test_the_score_ignores_order_and_duplicates_and_gold_scores_100(preds, rnd):
    gold = [make_doc(labels=[{"h": 1, "t": 2, "r": "P17", "evidence": [0]}, {"h": 0, "t": 1, "r": "P27", "evidence": []}]),
            make_doc(title="other")]
    shuffled = preds * 2
    rnd.shuffle(shuffled)
    assert evaluate(shuffled, gold, set(), []) == evaluate(preds, gold, set(), [])
    as_preds = [{"title": d["title"], "h_idx": lab["h"], "t_idx": lab["t"], "r": lab["r"]} for d in gold
                for lab in d["labels"]]
    perfect = evaluate(as_preds, gold, set(), [])
    assert (perfect["f1"], perfect["precision"], perfect["recall"]) == (100.0, 100.0, 100.0)


FACT = st.tuples(st.sampled_from(["John", "Paris", "France"]), st.sampled_from(["John", "Paris", "France"]),
                 st.sampled_from(["P17", "P27", "P131"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(TRIPLE, max_size=10), st.sets(FACT, max_size=6), st.sets(FACT, max_size=6))
def test_ign_f1_never_exceeds_f1_and_falls_as_the_train_facts_grow(preds, facts, more):
    """Ign F1 leaves out the correct triples already among the train facts: a superset of facts
    leaves out at least as many, so Ign F1 can only fall, and never rises above F1."""
    gold = [make_doc(labels=[{"h": 1, "t": 2, "r": "P17", "evidence": [0]}, {"h": 0, "t": 1, "r": "P27", "evidence": []}]),
            make_doc(title="other")]
    some, superset = evaluate(preds, gold, facts, []), evaluate(preds, gold, facts | more, [])
    assert superset["ign_f1"] <= some["ign_f1"] + 1e-9
    assert some["ign_f1"] <= some["f1"] + 1e-9 and superset["ign_f1"] <= superset["f1"] + 1e-9
    assert superset["f1"] == some["f1"]  # the facts change only Ign F1


@pytest.mark.parametrize("gold, says", [
    ([], "gold.json: no documents to score against"),
    ([{k: v for k, v in make_doc().items() if k != "labels"}], 'gold.json: document 0 ("doc"): labels: missing'),
    ([make_doc(), {**make_doc(title="other"), "labels": None}], 'gold.json: document 1 ("other"): labels: expected a list'),
], ids=["empty", "unlabelled (DocRED's test.json)", "labels-null"])
def test_a_gold_file_without_labels_is_refused_not_scored_as_zero(tmp_path, capsys, gold, says):
    with pytest.raises(SystemExit) as e:
        main(evaluate_cli(tmp_path, [], gold))
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err, err
