"""The intent head and unknown gate on synthetic embeddings (deterministic, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.nlp.entities import DATA_DIR
from services.nlp.evaluation import score
from services.nlp.intents import INTENTS, MIN_EXAMPLES, IntentClassifier, IntentData


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clusters(seed: int = 0, dim: int = 32, per: int = 20, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centers = _unit(rng.normal(size=(3, dim)))
    examples = {f"i{k}": _unit(centers[k] + spread * rng.normal(size=(per, dim)) / np.sqrt(dim))
                for k in range(3)}
    return rng, centers, examples


def test_head_classifies_and_gate_rejects_far_points():
    rng, centers, examples = _clusters()
    ood = _unit(rng.normal(size=(10, 32)))
    clf = IntentClassifier().fit(examples, ood)
    near = clf.classify(_unit(centers + 0.1 * rng.normal(size=centers.shape) / np.sqrt(32)))
    assert [r.intent for r in near] == ["i0", "i1", "i2"]
    assert all(0.5 < r.confidence <= 1.0 for r in near)
    far = clf.classify(_unit(rng.normal(size=(5, 32))))
    assert all(r.intent == "unknown" for r in far)
    assert 0.2 <= clf.threshold <= 0.7


def test_fit_is_deterministic():
    _, _, examples = _clusters(seed=3)
    ood = _unit(np.random.default_rng(1).normal(size=(8, 32)))
    a, b = IntentClassifier().fit(examples, ood), IntentClassifier().fit(examples, ood)
    probe = _unit(np.random.default_rng(2).normal(size=(4, 32)))
    assert a.threshold == b.threshold
    assert [r.intent for r in a.classify(probe)] == [r.intent for r in b.classify(probe)]


def test_packaged_intent_data_has_every_intent_with_enough_examples():
    data = IntentData.load(DATA_DIR / "intents.json")
    assert set(INTENTS) == set(data.examples)
    assert all(len(v) >= MIN_EXAMPLES for v in data.examples.values())
    assert len(data.out_of_domain) >= 10


def test_heldout_sets_do_not_reuse_examples():
    from tests.stage.nlp_fixtures import heldout

    data = IntentData.load(DATA_DIR / "intents.json")
    used = {t.lower() for v in data.examples.values() for t in v} | {t.lower() for t in data.out_of_domain}
    rows = heldout()
    assert len(rows) >= 120
    assert not [r["text"] for r in rows if r["text"].lower() in used]


def test_intent_data_with_too_few_examples_is_rejected(tmp_path):
    raw = {"intents": {i: ["x"] * MIN_EXAMPLES for i in INTENTS}}
    raw["intents"]["help"] = ["help"]
    path = tmp_path / "intents.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="help"):
        IntentData.load(path)


def test_score_counts_entities_and_unknown_confusion():
    rows = [{"text": "a", "intent": "recommend", "genre": ["Comedy"]},
            {"text": "b", "intent": "unknown"}, {"text": "c", "intent": "help"}]
    preds = [("recommend", {("genre", "Comedy"), ("genre", "Drama")}), ("greeting", set()), ("unknown", set())]
    report = score(rows, preds)
    assert report.intent_accuracy == pytest.approx(1 / 3)
    assert report.entities["genre"].precision == 0.5 and report.entities["genre"].recall == 1.0
    assert report.unknown_confusion() == {"gold_unknown": 1, "unknown_correct": 0,
                                          "unknown_predicted_as_intent": 1, "intent_predicted_as_unknown": 1}
