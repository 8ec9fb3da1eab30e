"""DocRED relation-extraction metrics: official F1 / Ign F1 plus KD-DocRE's analysis metrics.

All scores are percentages (0..100). Predictions use the DocRED submission format
``{"title", "h_idx", "t_idx", "r", "evidence"?}`` and are deduplicated on
(title, h_idx, t_idx, r) everywhere; this equals the official sort + adjacent-dedup.

Official scorer (thunlp/DocRED ``code/evaluation.py``; ATLOP's ``official_evaluate``):
  * gold ``std`` = set of (title, r, h, t) over all gold labels; recall = correct / |std|.
  * A prediction whose title is not in the gold file is skipped (``continue``) but stays in
    ``len(submission_answer)``, so it counts as a wrong prediction in the precision
    denominator. Every metric here follows that: an unknown title is a doc with no gold.
  * Ign: a *correct* prediction is "in train" if (name of any mention of h, name of any
    mention of t, r) is a train fact. Ign P = (correct - in_train) / (n_pred - in_train);
    Ign F1 = harmonic mean of Ign P and the ordinary recall. Wrong predictions are never
    removed, even if their names form a train fact.
  * Zero divisions give 0.0 instead of crashing. No 1e-5 fudge (ATLOP adds it to the Ign P
    denominator): that denominator is 0 only when the numerator is too, so both give 0.

Infer-F1 (GAIN, Zeng et al. 2020, Sec. 4.6): "we take into account golden relation facts
r1, r2 and r3 if there exist e_h -r1-> e_o -r2-> e_t and e_h -r3-> e_t". GAIN never released
the code for it (DreamInvoker/GAIN issue #28 asks for it and has no answer; neither
code/test.py nor code/utils.py compute it), so the paper only fixes the gold side. Our
definition: an *inference pair* is an ordered entity pair (h,e), (e,t) or (h,t) of a gold
triangle (h,e), (e,t), (h,t) in one doc with e not in {h, t}. Any relation on those three pairs
closes the triangle, so "triple in a triangle" is a property of the pair. Gold and predicted
triples are both limited to inference pairs, so a wrong relation on such a pair lowers
precision (the same pair-based filter as Intra/Inter-F1).

Error categories (KD-DocRE, Tan et al. 2022, error analysis): each deduplicated predicted
triple is exactly one of C (it is gold), W (its pair has gold relations but not this one) or
MR (its pair has no gold relation); each gold triple is C or MS (not predicted).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable

Triple = tuple[str, int, int, str]  # (title, h_idx, t_idx, r)
Pair = tuple[str, int, int]  # (title, h_idx, t_idx)
Fact = tuple[str, str, str]  # (head mention name, tail mention name, r)


def _pred_triples(preds: Iterable[dict]) -> set[Triple]:
    return {(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in preds}


def _gold_triples(gold_docs: Iterable[dict]) -> set[Triple]:
    # .get: the DocRED test file has no labels
    return {(d["title"], lab["h"], lab["t"], lab["r"]) for d in gold_docs for lab in d.get("labels", [])}


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return _div(2 * p * r, p + r)


def _prf(n_correct: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p, r = _div(n_correct, n_pred), _div(n_correct, n_gold)
    return {"precision": 100 * p, "recall": 100 * r, "f1": 100 * _f1(p, r)}


def _score_sets(pred: set, gold: set) -> dict[str, float]:
    return _prf(len(pred & gold), len(pred), len(gold))


def train_facts(train_docs: Iterable[dict]) -> set[Fact]:
    """Facts as DocRED's ``gen_train_facts`` builds them: every mention name of h x of t."""
    facts: set[Fact] = set()
    for doc in train_docs:
        ents = doc["vertexSet"]
        for lab in doc["labels"]:
            facts.update((m1["name"], m2["name"], lab["r"]) for m1 in ents[lab["h"]] for m2 in ents[lab["t"]])
    return facts


def official_scores(preds: Iterable[dict], gold_docs: list[dict], facts: Collection[Fact]) -> dict:
    """P / R / F1 and Ign P / Ign F1 as DocRED's official evaluation.py computes them."""
    pred, gold = _pred_triples(preds), _gold_triples(gold_docs)
    ents = {d["title"]: d["vertexSet"] for d in gold_docs}
    correct = pred & gold  # all from known titles, since they are gold
    in_train = sum(
        any((m1["name"], m2["name"], r) in facts for m1 in ents[title][h] for m2 in ents[title][t])
        for title, h, t, r in correct
    )
    p, r = _div(len(correct), len(pred)), _div(len(correct), len(gold))
    ign_p = _div(len(correct) - in_train, len(pred) - in_train)
    return {
        "precision": 100 * p, "recall": 100 * r, "f1": 100 * _f1(p, r),
        "ign_f1": 100 * _f1(ign_p, r), "ign_precision": 100 * ign_p,
        "n_pred": len(pred), "n_gold": len(gold), "n_correct": len(correct),
    }


def frequent_relations(train_docs: Iterable[dict], k: int = 10) -> list[str]:
    """The k most frequent train relation ids; ties broken by id so the split is deterministic."""
    counts = Counter(lab["r"] for doc in train_docs for lab in doc["labels"])
    return sorted(counts, key=lambda r: (-counts[r], r))[:k]


def relation_subset_f1(preds: Iterable[dict], gold_docs: Iterable[dict], relations: Collection[str]) -> dict:
    """F1 on triples whose relation is in ``relations`` (both sides): frequent vs long-tail."""
    keep = set(relations)
    pred = {x for x in _pred_triples(preds) if x[3] in keep}
    gold = {x for x in _gold_triples(gold_docs) if x[3] in keep}
    return _score_sets(pred, gold)


def _inference_pairs(gold: set[Triple]) -> set[Pair]:
    """Pairs that are an edge of a gold triangle h->e, e->t, h->t (e not in {h, t})."""
    pairs = {x[:3] for x in gold if x[1] != x[2]}
    tails = defaultdict(set)  # (title, h) -> {t}
    for title, h, t in pairs:
        tails[title, h].add(t)
    out: set[Pair] = set()
    for title, h, t in pairs:
        for e in tails[title, h]:
            if e not in (h, t) and (title, e, t) in pairs:
                out |= {(title, h, e), (title, e, t), (title, h, t)}
    return out


def infer_f1(preds: Iterable[dict], gold_docs: Iterable[dict]) -> dict:
    """GAIN-style Infer-F1: scores only triples on the pairs of 2-hop gold triangles (see module doc)."""
    gold = _gold_triples(gold_docs)
    keep = _inference_pairs(gold)
    pred = {x for x in _pred_triples(preds) if x[:3] in keep}
    return _score_sets(pred, {x for x in gold if x[:3] in keep})


def error_categories(preds: Iterable[dict], gold_docs: Iterable[dict]) -> dict[str, int]:
    """KD-DocRE error counts: C (correct), W (wrong relation on a gold pair), MS (missed), MR (extra)."""
    pred, gold = _pred_triples(preds), _gold_triples(gold_docs)
    gold_pairs = {x[:3] for x in gold}
    c = len(pred & gold)
    w = sum(x[:3] in gold_pairs for x in pred - gold)
    return {"C": c, "W": w, "MS": len(gold) - c, "MR": len(pred) - c - w}


def binary_f1(preds: Iterable[dict], gold_docs: Iterable[dict]) -> dict:
    """F1 of "this ordered pair has some relation", ignoring which one: detection vs classification."""
    return _score_sets({x[:3] for x in _pred_triples(preds)}, {x[:3] for x in _gold_triples(gold_docs)})


def evaluate(preds: Iterable[dict], gold_docs: list[dict], facts: Collection[Fact],
             frequent: Collection[str]) -> dict:
    """All metrics in one flat, JSON-serializable dict; long-tail = every relation not in ``frequent``."""
    preds = list(preds)
    off = official_scores(preds, gold_docs, facts)
    seen = {x[3] for x in _pred_triples(preds) | _gold_triples(gold_docs)}
    return {
        **{k: off[k] for k in ("precision", "recall", "f1", "ign_f1", "ign_precision")},
        "freq_f1": relation_subset_f1(preds, gold_docs, frequent)["f1"],
        "long_tail_f1": relation_subset_f1(preds, gold_docs, seen - set(frequent))["f1"],
        "infer_f1": infer_f1(preds, gold_docs)["f1"],
        "binary_f1": binary_f1(preds, gold_docs)["f1"],
        **error_categories(preds, gold_docs),
        "n_pred": off["n_pred"], "n_gold": off["n_gold"],
    }
