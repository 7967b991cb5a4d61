"""Phrase boosting, the decoder side: rescore a final transcript with candidate phrases put in.

After the greedy pass, :func:`~services.asr.phrases.find_candidates` names spans of the transcript that
sound like a boosted phrase. Each candidate gives an alternative transcript (the span replaced by the
phrase), and the ``whisper-tiny-en-scorer`` model (the decoder's own weights, every alternative in one call)
computes the log-probability of each alternative given the utterance's audio: a forced decode. The
transcript's own log-probability is its greedy decode's (the same model's, so the scorer would give the
same). The transcript is replaced by the alternative with the highest

    log P(alternative) + boost * (tokens of the phrase)    if that beats    log P(transcript)

so a phrase wins only where the audio supports it nearly as well as what was heard, and the boost says
how much "nearly" is. Only the positions from an alternative's first difference are scored (those before
are the same tokens), and only those go through the vocabulary projection, most of a call's cost. Only
finals are rescored; a scorer failure keeps the greedy transcript (boosting is an improvement, never a new
way to fail).

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
from services.asr.decoding import DecodeResult
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

    async def rescore(self, heard: DecodeResult, encoded: EncodedUtterance, sets: Sequence[PhraseSet], *,
                      deadline_s: float | None) -> Boosted:
        """The greedy transcript ``heard`` with the best-supported candidate phrase put in, or unchanged."""
        tokens = heard.tokens
        raw = self.tokenizer.raw_text(tokens)
        candidates = await asyncio.to_thread(find_candidates, raw, sets, self.keys,
                                             max_candidates=self.max_candidates, min_similarity=self.min_similarity)
        if not candidates:
            BOOSTS.labels(outcome="no_candidates").inc()
            return Boosted(tokens)
        prompt = list(self.rule.prompt)
        transcript = [*prompt, *tokens, self.rule.eot]
        texts = [self.tokenizer.encode(raw[:c.start] + c.phrase.text + raw[c.end:]) for c in candidates]
        rows = [[*prompt, *t, self.rule.eot][:self.rule.capacity] for t in texts]
        # Each alternative is scored from its first difference with the transcript (the tokens before score
        # alike); the transcript's own log-probabilities are its greedy decode's (the scorer gives the same: the
        # stage test checks it).
        starts = [_common_prefix(transcript, r) for r in rows]
        try:
            logprob = await self.scorer.submit(ScoreJob.of(rows, starts, encoded, self.rule.eot), deadline_s=deadline_s)
        except EngineError as e:
            BOOSTS.labels(outcome="failed").inc()
            log.warning("phrase boosting skipped for one final: %s", e)
            return Boosted(tokens)
        gains = _gains([len(r) for r in rows], starts, logprob, heard.logprobs, len(prompt))
        best, chosen = 0.0, None
        for candidate, text, gain in zip(candidates, texts, gains, strict=True):
            boosted = gain + candidate.phrase.boost * self._phrase_tokens(candidate)
            if boosted > best:
                best, chosen = boosted, (candidate, text)
        if chosen is None:
            BOOSTS.labels(outcome="kept").inc()
            return Boosted(tokens)
        BOOSTS.labels(outcome="applied").inc()
        return Boosted(tuple(chosen[1]), chosen[0].phrase.text)

    def _phrase_tokens(self, candidate: Candidate) -> int:
        return len(self.tokenizer.encode(" " + candidate.phrase.text))


def _gains(lengths: Sequence[int], starts: Sequence[int], logprob: np.ndarray, transcript: np.ndarray,
           first: int) -> list[float]:
    """log P(alternative) - log P(transcript) of each alternative: ``logprob`` holds the scorer's values of
    alternative i's positions starts[i]..lengths[i]-1, one alternative after another; ``transcript`` the
    transcript's from position ``first`` (the prompt's length) to its end. Only the positions from an
    alternative's first difference count (those before are the same tokens, so the same values)."""
    ends = np.cumsum([n - s for n, s in zip(lengths, starts, strict=True)])
    return [float(logprob[end - (n - s):end].sum() - transcript[s - first:].sum())
            for n, s, end in zip(lengths, starts, ends, strict=True)]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
