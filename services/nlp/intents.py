"""Intent classification over sentence embeddings: a softmax head for the label, a similarity gate for ``unknown``.

Why this design (measured in docs/bench/nlp.md):
- Titles are replaced by "a movie" before the intent embedding ("i loved fargo" -> "i loved a movie"), so the
  classifier sees the request's shape, not which film; this lifted held-out accuracy the most.
- The label comes from a multinomial logistic-regression head trained on the example embeddings (NumPy, at
  start-up, deterministic, ~50 ms). It separated close intents (``recommend`` vs ``similar_to`` vs
  ``movie_info``) better than nearest centroid or k-NN.
- Softmax confidence says nothing about out-of-domain text (it is ~1.0 for "what's the weather"), so
  ``unknown`` is decided by the mean cosine of the ``k`` most similar examples: below ``threshold`` ->
  ``unknown``. The threshold is calibrated at start-up on the data file only, minimising
  (in-domain leave-one-out rejections + out-of-domain calibration acceptances).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"
INTENTS = ("recommend", "similar_to", "movie_info", "rate", "more", "help", "greeting", "goodbye")
MIN_EXAMPLES = 15


@dataclass(frozen=True, kw_only=True)
class IntentData:
    """The example utterances per intent and the out-of-domain calibration utterances."""

    examples: dict[str, list[str]]
    out_of_domain: list[str]

    @classmethod
    def load(cls, path: Path) -> IntentData:
        """Read and check ``intents.json`` (every intent present, >= ``MIN_EXAMPLES`` examples each)."""
        raw = json.loads(path.read_text(encoding="utf-8"))
        examples = {k: list(v) for k, v in raw["intents"].items()}
        missing = [i for i in INTENTS if i not in examples]
        if missing:
            raise ValueError(f"{path}: intents {missing} have no examples")
        short = {k: len(v) for k, v in examples.items() if len(v) < MIN_EXAMPLES}
        if short:
            raise ValueError(f"{path}: intents need >= {MIN_EXAMPLES} examples, have {short}")
        return cls(examples=examples, out_of_domain=list(raw.get("out_of_domain", [])))


@dataclass(frozen=True, slots=True)
class IntentResult:
    """A classification: label, its confidence, and the in-domain similarity that gated it."""

    intent: str
    confidence: float
    similarity: float


class IntentClassifier:
    """Softmax head + k-NN similarity gate over L2-normalised embeddings (see the module docstring)."""

    def __init__(self, *, temperature: float = 0.05, l2: float = 1e-3, iterations: int = 500,
                 learning_rate: float = 0.5, k: int = 3) -> None:
        self.temperature = temperature
        self.l2 = l2
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.k = k
        self.labels: tuple[str, ...] = ()
        self.threshold = 0.0
        self.calibration: dict[str, float] = {}
        self._weights = np.zeros((0, 0), dtype=np.float32)
        self._bias = np.zeros(0, dtype=np.float32)
        self._examples = np.zeros((0, 0), dtype=np.float32)

    def fit(self, examples: dict[str, np.ndarray], out_of_domain: np.ndarray) -> IntentClassifier:
        """Train the head on per-intent example embeddings and calibrate the ``unknown`` threshold."""
        self.labels = tuple(examples)
        x = np.concatenate([examples[k] for k in self.labels]).astype(np.float64)
        y = np.concatenate([np.full(len(examples[k]), i) for i, k in enumerate(self.labels)])
        w, b = self._train(x, y)
        self._weights, self._bias = w.astype(np.float32), b.astype(np.float32)
        self._examples = x.astype(np.float32)
        self._calibrate(x, out_of_domain.astype(np.float32))
        return self

    def _train(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Full-batch gradient descent from zeros: deterministic, and the problem is tiny (~150 x 384).
        n_cls = len(self.labels)
        w = np.zeros((x.shape[1], n_cls))
        b = np.zeros(n_cls)
        onehot = np.eye(n_cls)[y]
        t = self.temperature
        for _ in range(self.iterations):
            p = _softmax(x @ w / t + b)
            g = (p - onehot) / len(x)
            w -= self.learning_rate * (x.T @ g / t + self.l2 * w)
            b -= self.learning_rate * g.sum(0)
        return w, b

    def _knn_similarity(self, emb: np.ndarray, examples: np.ndarray) -> np.ndarray:
        sims = emb @ examples.T
        k = min(self.k, examples.shape[0])
        return np.sort(sims, axis=1)[:, -k:].mean(axis=1)

    def _calibrate(self, x: np.ndarray, ood: np.ndarray) -> None:
        xs = x.astype(np.float32)
        sims = xs @ xs.T
        np.fill_diagonal(sims, -np.inf)  # leave-one-out: an example may not vouch for itself
        k = min(self.k, len(xs) - 1)
        loo = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
        ood_sim = self._knn_similarity(ood, xs) if len(ood) else np.zeros(0, dtype=np.float32)
        best = (np.inf, 0.0)
        for th in np.round(np.arange(0.20, 0.70, 0.01), 2):
            err = float((loo < th).mean()) + (float((ood_sim >= th).mean()) if len(ood_sim) else 0.0)
            best = min(best, (err, float(th)))
        self.threshold = best[1]
        self.calibration = {
            "threshold": self.threshold,
            "in_domain_loo_rejected": float((loo < self.threshold).mean()),
            "out_of_domain_accepted": float((ood_sim >= self.threshold).mean()) if len(ood_sim) else 0.0,
            "examples": int(len(xs)),
            "out_of_domain_examples": int(len(ood_sim)),
        }

    def classify(self, emb: np.ndarray) -> list[IntentResult]:
        """Classify a [N, D] batch of L2-normalised embeddings."""
        emb = np.atleast_2d(emb).astype(np.float32)
        probs = _softmax(emb @ self._weights / self.temperature + self._bias)
        sims = self._knn_similarity(emb, self._examples)
        out = []
        for p, sim in zip(probs, sims, strict=True):
            if sim < self.threshold:
                # How far below the gate, 0..1: 0 at the threshold, 1 at similarity 0.
                conf = float(np.clip(1.0 - sim / self.threshold, 0.0, 1.0)) if self.threshold > 0 else 1.0
                out.append(IntentResult(UNKNOWN, conf, float(sim)))
            else:
                i = int(p.argmax())
                out.append(IntentResult(self.labels[i], float(p[i]), float(sim)))
        return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
