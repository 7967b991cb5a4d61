"""Scoring NLP output against labelled utterances: intent accuracy, per-type entity P/R, unknown confusion.

Pure functions, used by the accuracy regression test and ``benchmarks/nlp_bench.py``. A labelled row is
``{"text", "intent", "genre": [...], "decade": [...], "year": [...], "title": [...], "rating": [...]}``
with canonical values; a prediction is ``(intent, {(type, value), ...})``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

ENTITY_TYPES = ("genre", "decade", "year", "title", "rating")


@dataclass
class EntityScore:
    """True/false positives and false negatives of one entity type."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Report:
    """The scores of one labelled set."""

    n: int = 0
    intent_correct: int = 0
    entities: dict[str, EntityScore] = field(default_factory=lambda: {t: EntityScore() for t in ENTITY_TYPES})
    # (gold, predicted) -> count, for every utterance.
    confusion: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def intent_accuracy(self) -> float:
        return self.intent_correct / self.n if self.n else 0.0

    def unknown_confusion(self) -> dict[str, int]:
        """Gold unknown predicted as something else, and in-domain predicted unknown."""
        gold_unknown = sum(c for (g, _), c in self.confusion.items() if g == "unknown")
        return {
            "gold_unknown": gold_unknown,
            "unknown_correct": self.confusion[("unknown", "unknown")],
            "unknown_predicted_as_intent": gold_unknown - self.confusion[("unknown", "unknown")],
            "intent_predicted_as_unknown": sum(c for (g, p), c in self.confusion.items()
                                               if g != "unknown" and p == "unknown"),
        }


def score(rows: list[dict], predictions: list[tuple[str, set[tuple[str, str]]]]) -> Report:
    """Score ``predictions`` (same order as ``rows``)."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    report = Report()
    for row, (intent, found) in zip(rows, predictions, strict=True):
        report.n += 1
        report.confusion[(row["intent"], intent)] += 1
        if intent == row["intent"]:
            report.intent_correct += 1
        else:
            report.errors.append(f"intent {row['text']!r}: want {row['intent']}, got {intent}")
        for typ in ENTITY_TYPES:
            want = set(row.get(typ, []))
            have = {v for t, v in found if t == typ}
            s = report.entities[typ]
            s.tp += len(want & have)
            s.fp += len(have - want)
            s.fn += len(want - have)
            if want != have:
                report.errors.append(f"{typ} {row['text']!r}: want {sorted(want)}, got {sorted(have)}")
    return report
