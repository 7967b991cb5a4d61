"""Phrase boosting, the decoder side: rescore a final transcript with candidate phrases put in.

After the greedy pass, :func:`~services.asr.phrases.find_candidates` names spans of the transcript that
sound like a boosted phrase. Each candidate gives an alternative transcript (the span replaced by the
phrase), and the ``whisper-tiny-en-scorer`` model (the decoder's own weights, every token in one call)
computes the log-probability of the transcript and of every alternative given the utterance's audio: a
forced decode. The transcript is replaced by the alternative with the highest

    log P(alternative) + boost * (tokens of the phrase)    if that beats    log P(transcript)

so a phrase wins only where the audio supports it nearly as well as what was heard, and the boost says
how much "nearly" is. Positions before an alternative's first difference score alike and are skipped
(the scorer projects only the positions asked for onto the vocabulary, most of its cost). Only finals are
rescored; a scorer failure keeps the greedy transcript (boosting is an improvement, never a new way to fail).

Why this and not another decoder-level method, measured on the spoken title set (docs/asr.md): a prompt
with the candidate titles needs a second greedy decode (~25 sequential decoder steps, ~230 ms on the
2-core CPU, against the 1.2x latency budget's ~75 ms); shallow fusion of a title trie into greedy decoding
cannot undo a wrong first token and puts titles everywhere without per-utterance candidates. Rescoring
costs one scorer call on a few short sequences.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from engines.base import Engine
from engines.batcher import DynamicBatcher
from engines.errors import EngineError
from engines.models.whisper_spec import GreedyRule
from services.asr.generation import EncodedUtterance
from services.asr.phrases import Candidate, PhoneticKeys, PhraseSet, find_candidates
from services.asr.tokenizer import WhisperTokenizer

log = logging.getLogger(__name__)

SCORER_MODEL = "whisper-tiny-en-scorer"
BOOSTS = Counter("voxpipe_asr_phrase_boosts_total", "Final transcripts checked against boosted phrases, by outcome: "
                 "applied (a phrase replaced what was heard), kept (candidates lost), no_candidates, failed (the "
                 "scorer failed; the greedy transcript was kept).", ("outcome",))


@dataclass(frozen=True, slots=True)
class ScoreJob:
    """Candidate sequences [C, T] of one utterance (prompt, text, end token) and the positions to score, as flat
    indices into them (``WhisperDecoder.score``)."""

    tokens: np.ndarray
    score_at: np.ndarray
    encoded: EncodedUtterance

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]], score_from: Sequence[int], encoded: EncodedUtterance,
           pad: int) -> ScoreJob:
        """Rows padded with ``pad`` into one grid; row i scored from position ``score_from[i]`` (>= 1) to its end."""
        width = max(map(len, rows))
        grid = np.full((len(rows), width), pad, np.int64)
        for i, row in enumerate(rows):
            grid[i, :len(row)] = row
        at = [i * width + j for i, (row, first) in enumerate(zip(rows, score_from, strict=True))
              for j in range(first, len(row))]
        return cls(grid, np.array(at, np.int64), encoded)


def scorer_batch_fn(engine: Engine) -> Callable[[list[ScoreJob]], list[np.ndarray]]:
    """Batch function: each job's log-probabilities [N] (its ``score_at``), one engine call per utterance."""

    def run(jobs: list[ScoreJob]) -> list[np.ndarray]:
        out = []
        for job in jobs:
            feeds = {"tokens": job.tokens[None], "score_at": job.score_at[None]}
            for layer in range(len(job.encoded.cross_key)):
                feeds[f"cross_key_{layer}"] = job.encoded.cross_key[layer][None]
                feeds[f"cross_value_{layer}"] = job.encoded.cross_value[layer][None]
            out.append(np.asarray(engine.run(feeds)["logprob"][0]))
        return out

    return run


@dataclass(frozen=True, slots=True)
class Boosted:
    """A final transcript after boosting: its tokens, and the phrase put in (empty: unchanged)."""

    tokens: tuple[int, ...]
    phrase: str = ""


class PhraseBooster:
    """Rescoring of final transcripts (see the module docstring); shared by every stream of the stage."""

    def __init__(self, scorer: DynamicBatcher[ScoreJob, np.ndarray], *, tokenizer: WhisperTokenizer,
                 rule: GreedyRule, keys: PhoneticKeys, max_candidates: int, min_similarity: float) -> None:
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.rule = rule
        self.keys = keys
        self.max_candidates = max_candidates
        self.min_similarity = min_similarity

    async def rescore(self, tokens: tuple[int, ...], encoded: EncodedUtterance, sets: Sequence[PhraseSet], *,
                      deadline_s: float | None) -> Boosted:
        """The transcript ``tokens`` with the best-supported candidate phrase put in, or unchanged."""
        raw = self.tokenizer.raw_text(tokens)
        candidates = await asyncio.to_thread(find_candidates, raw, sets, self.keys,
                                             max_candidates=self.max_candidates, min_similarity=self.min_similarity)
        if not candidates:
            BOOSTS.labels(outcome="no_candidates").inc()
            return Boosted(tokens)
        prompt = list(self.rule.prompt)
        texts = [self.tokenizer.encode(raw[:c.start] + c.phrase.text + raw[c.end:]) for c in candidates]
        rows = [[*prompt, *tokens, self.rule.eot], *([*prompt, *t, self.rule.eot] for t in texts)]
        rows = [r[:self.rule.capacity] for r in rows]
        # Each alternative is scored from its first difference with the transcript, the transcript from the
        # earliest of those: the tokens before score alike, so only these positions decide.
        starts = [max(1, _common_prefix(rows[0], r)) for r in rows[1:]]
        starts.insert(0, min(starts))
        try:
            logprob = await self.scorer.submit(ScoreJob.of(rows, starts, encoded, self.rule.eot), deadline_s=deadline_s)
        except EngineError as e:
            BOOSTS.labels(outcome="failed").inc()
            log.warning("phrase boosting skipped for one final: %s", e)
            return Boosted(tokens)
        ends = np.cumsum([len(r) - s for r, s in zip(rows, starts, strict=True)])
        heard = logprob[:ends[0]]  # the transcript's, from starts[0]
        # An alternative against the transcript over the positions from its own first difference on.
        totals = [float(logprob[ends[i - 1]:ends[i]].sum() - heard[starts[i] - starts[0]:].sum())
                  for i in range(1, len(rows))]
        best, chosen = 0.0, None
        for candidate, text, total in zip(candidates, texts, totals, strict=True):
            boosted = total + candidate.phrase.boost * self._phrase_tokens(candidate)
            if boosted > best:
                best, chosen = boosted, (candidate, text)
        if chosen is None:
            BOOSTS.labels(outcome="kept").inc()
            return Boosted(tokens)
        BOOSTS.labels(outcome="applied").inc()
        return Boosted(tuple(chosen[1]), chosen[0].phrase.text)

    def _phrase_tokens(self, candidate: Candidate) -> int:
        return len(self.tokenizer.encode(" " + candidate.phrase.text))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
