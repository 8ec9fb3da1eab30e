"""Score predictions the way every command reports them: official F1 / Ign F1 and the analyses."""
from __future__ import annotations

from .config import Config
from .data.distant import load_facts
from .data.docred import RelSchema
from .data.splits import load_split
from .metrics import evaluate, frequent_relations, train_facts


class Reference:
    """What scoring needs from the training data: Ign facts and the frequent relations."""

    def __init__(self, facts: set, frequent: list[str]):
        self.facts, self.frequent = facts, frequent

    @classmethod
    def from_train(cls, train_docs: list[dict], facts: set | None = None) -> Reference:
        """Ign facts as given (a fact file's), else from the training documents' names."""
        return cls(facts if facts is not None else train_facts(train_docs), frequent_relations(train_docs))

    @classmethod
    def from_config(cls, conf: Config, schema: RelSchema) -> Reference:
        train = load_split(conf.data.train, schema, conf.data.skip_bad_docs, log=lambda *a: None)
        return cls.from_train(train, load_facts(conf.data.train_facts, schema) if conf.data.train_facts else None)

    def score(self, preds: list[dict], gold_docs: list[dict]) -> dict:
        return evaluate(preds, gold_docs, self.facts, self.frequent)


def format_metrics(m: dict) -> str:
    rows = [("F1", "f1"), ("Ign F1", "ign_f1"), ("precision", "precision"), ("recall", "recall"),
            ("frequent F1", "freq_f1"), ("long-tail F1", "long_tail_f1"), ("Infer-F1", "infer_f1"),
            ("binary F1", "binary_f1")]
    lines = [f"  {label:<13}{m[key]:7.2f}" for label, key in rows if key in m]
    if "C" in m:
        lines.append(f"  errors       C {m['C']}  W {m['W']}  MS {m['MS']}  MR {m['MR']}"
                     f"  (predicted {m['n_pred']}, gold {m['n_gold']})")
    return "\n".join(lines)
