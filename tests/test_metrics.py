"""Hand-computed checks for kddocre_ray.metrics (all scores in percent)."""
import json

import pytest

from kddocre_ray.metrics import (
    binary_f1,
    error_categories,
    evaluate,
    frequent_relations,
    infer_f1,
    official_scores,
    relation_subset_f1,
    train_facts,
)


def doc(title, names, labels):
    """DocRED-style doc: names[i] = mention names of entity i, labels = [(h, t, r)]."""
    return {
        "title": title,
        "sents": [["x"]],
        "vertexSet": [[{"name": n, "pos": [0, 1], "sent_id": 0, "type": "MISC"} for n in ent] for ent in names],
        "labels": [{"h": h, "t": t, "r": r, "evidence": [0]} for h, t, r in labels],
    }


def pred(title, h, t, r):
    return {"title": title, "h_idx": h, "t_idx": t, "r": r}


# A: a gold triangle 0->1->2, 0->2; B: a chain without a closing edge. 5 gold triples.
A = doc("A", [["Paris", "Paris city"], ["France"], ["Europe"]], [(0, 1, "P17"), (1, 2, "P30"), (0, 2, "P30")])
B = doc("B", [["Alice"], ["Bob"], ["Carol"]], [(0, 1, "P26"), (1, 2, "P40")])
GOLD = [A, B]
ALL = [pred(d["title"], lab["h"], lab["t"], lab["r"]) for d in GOLD for lab in d["labels"]]


def test_perfect_prediction_scores_100():
    s = official_scores(ALL, GOLD, set())
    assert (s["precision"], s["recall"], s["f1"], s["ign_f1"], s["ign_precision"]) == pytest.approx((100,) * 5)
    assert (s["n_pred"], s["n_gold"], s["n_correct"]) == (5, 5, 5)


def test_duplicate_predictions_are_counted_once():
    """2 correct + 1 wrong, each submitted twice -> P=2/3, R=2/5, F1=1/2."""
    preds = [pred("A", 0, 1, "P17"), pred("A", 1, 2, "P30"), pred("A", 1, 0, "P17")] * 2
    s = official_scores(preds, GOLD, set())
    assert s["n_pred"] == 3 and s["n_correct"] == 2
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((200 / 3, 40, 50))


def test_unknown_title_counts_as_wrong_prediction():
    """Official scorer skips it but keeps it in len(submission_answer): P=5/6, F1=10/11."""
    s = official_scores(ALL + [pred("Z", 0, 1, "P17")], GOLD, set())
    assert s["n_pred"] == 6
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((500 / 6, 100, 1000 / 11))


IGN_PREDS = [pred("A", 0, 1, "P17"), pred("A", 1, 2, "P30"), pred("A", 0, 2, "P17")]  # 2 correct, 1 wrong


@pytest.mark.parametrize("head_name", ["Paris", "Paris city"])
def test_ign_removes_correct_train_fact_via_any_mention(head_name):
    """(A,0,1,P17) is a train fact through either mention of entity 0: Ign P=(2-1)/(3-1), R=2/5."""
    s = official_scores(IGN_PREDS, GOLD, {(head_name, "France", "P17")})
    assert s["precision"] == pytest.approx(200 / 3)
    assert s["ign_precision"] == pytest.approx(50)
    assert s["ign_f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9 * 100)


def test_ign_keeps_wrong_prediction_that_is_a_train_fact():
    """Only correct predictions are checked against train facts (official behaviour)."""
    s = official_scores(IGN_PREDS, GOLD, {("Paris", "Europe", "P17"), ("Paris", "France", "P30")})
    assert s["ign_precision"] == pytest.approx(s["precision"]) == pytest.approx(200 / 3)
    assert s["ign_f1"] == pytest.approx(s["f1"])


def test_train_facts_cross_all_mention_names(tmp_path):
    facts = train_facts([A])
    assert ("Paris", "France", "P17") in facts and ("Paris city", "France", "P17") in facts
    assert len(facts) == 5  # 2 + 1 + 2
    path = tmp_path / "train_annotated.fact"
    path.write_text(json.dumps([list(f) for f in facts]))
    from kddocre_ray.data.distant import load_facts

    assert load_facts(str(path)) == facts


def test_frequent_relations_breaks_ties_by_id():
    train = [doc("T", [["a"], ["b"]], [(0, 1, r) for r in ["P4", "P3", "P3", "P2", "P2", "P1", "P1", "P1"]])]
    assert frequent_relations(train, k=2) == ["P1", "P2"]
    assert frequent_relations(train) == ["P1", "P2", "P3", "P4"]


def test_frequent_vs_long_tail_split():
    """frequent={P30}: 1/1 pred, 1/2 gold. Long tail: P17 wrong + P26 right over gold {P17,P26,P40}."""
    preds = [pred("A", 1, 2, "P30"), pred("A", 0, 2, "P17"), pred("B", 0, 1, "P26")]
    freq = relation_subset_f1(preds, GOLD, {"P30"})
    assert (freq["precision"], freq["recall"], freq["f1"]) == pytest.approx((100, 50, 200 / 3))
    tail = relation_subset_f1(preds, GOLD, {"P17", "P26", "P40"})
    assert (tail["precision"], tail["recall"], tail["f1"]) == pytest.approx((50, 100 / 3, 40))
    s = evaluate(preds, GOLD, set(), ["P30"])
    assert (s["freq_f1"], s["long_tail_f1"]) == pytest.approx((200 / 3, 40))


def test_infer_f1_scores_only_triangle_pairs():
    """C: triangle 0->1->2 + 0->2, plus (2,3) outside it. Off-triangle preds are ignored;
    a wrong relation on a triangle pair is a false positive: 2 correct / 3 pred / 3 gold."""
    c = doc("C", [["X"], ["Y"], ["Z"], ["W"]], [(0, 1, "P1"), (1, 2, "P2"), (0, 2, "P3"), (2, 3, "P4")])
    preds = [pred("C", 0, 1, "P1"), pred("C", 0, 2, "P3"), pred("C", 0, 2, "P5"),
             pred("C", 2, 3, "P4"), pred("C", 1, 0, "P1")]
    s = infer_f1(preds, [c])
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((200 / 3,) * 3)


def test_infer_f1_needs_closed_triangle_with_distinct_bridge():
    """A chain (doc B) or a symmetric pair (bridge == tail) holds no inference triples."""
    sym = doc("S", [["a"], ["b"]], [(0, 1, "P1"), (1, 0, "P2")])
    b_preds = [pred("B", 0, 1, "P26"), pred("B", 1, 2, "P40")]
    s_preds = [pred("S", 0, 1, "P1"), pred("S", 1, 0, "P2")]
    assert infer_f1(b_preds + s_preds, [B, sym]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert infer_f1(ALL, GOLD)["f1"] == pytest.approx(100)  # doc A's triangle only


def test_error_categories_partition_predictions_and_gold():
    preds = [
        pred("A", 0, 1, "P17"), pred("A", 0, 1, "P17"),  # C (deduplicated)
        pred("A", 0, 2, "P17"),  # W: pair (0,2) has gold P30
        pred("A", 1, 0, "P17"),  # MR: reversed pair has no gold relation
        pred("Z", 0, 1, "P17"),  # MR: unknown title
    ]
    e = error_categories(preds, GOLD)
    assert e == {"C": 1, "W": 1, "MS": 4, "MR": 2}
    assert e["C"] + e["W"] + e["MR"] == 4 and e["C"] + e["MS"] == 5


def test_binary_f1_ignores_relation_labels():
    """Pred pairs {(0,1),(0,2),(1,0)} vs gold pairs {(0,1),(1,2),(0,2)}: 2/3 each."""
    preds = [pred("A", 0, 1, "P17"), pred("A", 0, 1, "P99"), pred("A", 0, 2, "P17"), pred("A", 1, 0, "P1")]
    s = binary_f1(preds, [A])
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((200 / 3,) * 3)


def test_empty_predictions_give_zeros():
    s = evaluate([], GOLD, {("Paris", "France", "P17")}, ["P17"])
    json.dumps(s)
    assert set(s) == {"precision", "recall", "f1", "ign_f1", "ign_precision", "freq_f1", "long_tail_f1",
                      "infer_f1", "binary_f1", "C", "W", "MS", "MR", "n_pred", "n_gold"}
    assert all(s[k] == 0 for k in s if k not in ("MS", "n_gold"))
    assert s["MS"] == s["n_gold"] == 5
    assert all(v == 0 for v in evaluate([], [], set(), []).values())


def test_evaluate_matches_parts_and_is_json_serializable():
    s = evaluate(IGN_PREDS, GOLD, {("Paris", "France", "P17")}, ["P30"])
    json.dumps(s)
    assert s["ign_precision"] == pytest.approx(50)
    assert s["binary_f1"] == pytest.approx(binary_f1(IGN_PREDS, GOLD)["f1"])
    assert (s["C"], s["W"], s["MS"], s["MR"], s["n_pred"], s["n_gold"]) == (2, 1, 3, 0, 3, 5)
