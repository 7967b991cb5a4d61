"""Phrase boosting, the decoder side: rescore a final transcript with candidate phrases put in.

After the greedy pass, :func:`~services.asr.phrases.find_candidates` names spans of the transcript that
sound like a boosted phrase. Each candidate gives an alternative transcript (the span replaced by the
phrase), and the ``whisper-tiny-en-scorer`` model (the decoder's own weights, every alternative in one call)
computes the log-probability of each alternative given the utterance's audio: a forced decode. The
transcript's own log-probability is its greedy decode's (the same model's, so the scorer would give the
same). The transcript is replaced by the alternative with the highest

    log P(alternative) + boost * (tokens of the phrase)    if that beats    log P(transcript)

so a phrase wins only where the audio supports it nearly as well as what was heard, and the boost says
how much "nearly" is. Three things keep the call small, each measured on the spoken title set:

* **positions**: an alternative is compared from its first difference with the transcript (the tokens before
  score alike) to ``SCORED_AFTER_PHRASE`` tokens after the phrase (the rest of the question scores nearly
  alike under both; scoring all of it chose the same on every final of the set), and only those positions go
  through the vocabulary projection, most of a call's cost;
* **the first token from the greedy pass**: at an alternative's first difference it has the transcript's
  prefix, so its log-probability there is the greedy step's (the step's hidden state times the token's
  embedding, minus the step's log-normaliser; ``DecodeResult.logprob_at``), not the scorer's;
* **candidates ruled out**: every later token's log-probability is at most 0, so an alternative whose first
  token alone cannot beat the transcript, boost included, is never scored (half the candidates on the set;
  a final whose candidates are all ruled out makes no scorer call).

Only finals are rescored; a scorer failure keeps the greedy transcript (boosting is an improvement, never a
new way to fail).

Why this and not another decoder-level method, measured on the spoken title set (docs/asr.md): a prompt
with the candidate titles needs a second greedy decode (~25 sequential decoder steps, ~230 ms on the
2-core CPU, against the 1.2x latency budget's ~75 ms); shallow fusion of a title trie into greedy decoding
cannot undo a wrong first token and puts titles everywhere without per-utterance candidates. Rescoring
costs one scorer call on a few short sequences. On a GPU, where a second decode is cheap, the prompt was measured
too (``benchmarks/title_prompt_study.py``): as the final text it brings 5-11 false titles in 111 questions; as one
more alternative for this rule it adds recall without them (docs/asr.md), not served yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from engines.base import Engine
from engines.batcher import DynamicBatcher
from engines.errors import DeadlineExceededError, EngineError, QueueFullError
from engines.models.whisper_spec import GreedyRule
from engines.repository import ResolvedModel
from services.asr.decoding import DecodeResult
from services.asr.generation import EncodedUtterance, by_window
from services.asr.phrases import Candidate, PhoneticKeys, PhraseSet, find_candidates
from services.asr.tokenizer import WhisperTokenizer

log = logging.getLogger(__name__)

SCORER_MODEL = "whisper-tiny-en-scorer"
# Tokens after the phrase an alternative is scored on (and the transcript compared on): 3 chose as the whole
# rest of the question did on every final of the spoken title set; 1 changed 4 of 425 finals, 2 changed 1.
SCORED_AFTER_PHRASE = 3
BOOSTS = Counter("voxpipe_asr_phrase_boosts_total", "Final transcripts checked against boosted phrases, by outcome: "
                 "applied (a phrase replaced what was heard), kept (candidates lost), no_candidates, busy (the "
                 "scorer's queue held the final past [asr] phrase_max_wait_ms, or was full: the greedy transcript "
                 "went out), failed (the scorer failed; the greedy transcript was kept).", ("outcome",))
CANDIDATES = Counter("voxpipe_asr_phrase_candidates_total", "Candidate phrases of final transcripts, by fate: scored "
                     "(by the scorer), ruled_out (their first token could not win, so never scored).", ("fate",))


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
    """Batch function: each job's log-probabilities [N] (its ``score_at``). Jobs whose audio windows match share
    one engine call (utterances on axis 0, their candidate grids padded to the largest); a CPU batches one job
    at a time (a batch costs it the sum of its items), a GPU many, where a call costs mostly its launches."""

    def run(jobs: list[ScoreJob]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(jobs)
        for group in by_window([job.encoded.cross_key[0].shape[-1] for job in jobs]):
            logprob = np.asarray(engine.run(_score_feeds([jobs[i] for i in group]))["logprob"])
            for row, i in enumerate(group):
                out[i] = logprob[row, :len(jobs[i].score_at)]
        return out  # type: ignore[return-value]

    return run


def _score_feeds(jobs: list[ScoreJob]) -> dict[str, object]:
    """The scorer's inputs for utterances of one window: tokens [B, C, T] (each job's grid padded with its own
    fill token), score_at [B, N] (each job's flat indices re-based on the wider grid; the padding asks for
    position 1 of its first row, and is cut off the result) and the cross K/V stacked per layer."""
    rows = max(job.tokens.shape[0] for job in jobs)
    width = max(job.tokens.shape[1] for job in jobs)
    positions = max(len(job.score_at) for job in jobs)
    tokens = np.zeros((len(jobs), rows, width), np.int64)
    score_at = np.ones((len(jobs), positions), np.int64)
    for b, job in enumerate(jobs):
        c, t = job.tokens.shape
        tokens[b] = job.tokens[0, -1]  # any token: padded rows and columns are never asked for
        tokens[b, :c, :t] = job.tokens
        score_at[b, :len(job.score_at)] = (job.score_at // t) * width + job.score_at % t
    feeds: dict[str, object] = {"tokens": tokens, "score_at": score_at}
    for layer in range(len(jobs[0].encoded.cross_key)):
        feeds[f"cross_key_{layer}"] = _stack([job.encoded.cross_key[layer] for job in jobs])
        feeds[f"cross_value_{layer}"] = _stack([job.encoded.cross_value[layer] for job in jobs])
    return feeds


def _stack(values: list):
    """Stack host arrays or device tensors (a GPU encoder leaves its output on the device); one alone is not
    copied (a CPU's every call: the cross K/V of a 30 s window are ~9 MB)."""
    if len(values) == 1:
        return values[0][None]
    if isinstance(values[0], np.ndarray):
        return np.stack(values)
    import torch

    return torch.stack(values)


@dataclass(frozen=True, slots=True)
class Boosted:
    """A final transcript after boosting: its tokens, and the phrase put in (empty: unchanged)."""

    tokens: tuple[int, ...]
    phrase: str = ""


@dataclass(frozen=True, slots=True)
class _Alternative:
    """One candidate's transcript (text ``tokens``) against the greedy one: ``row`` (prompt, text, end token)
    is scored from ``start`` (its first difference) to ``end``, the transcript compared from ``start`` to
    ``heard_end``."""

    candidate: Candidate
    tokens: tuple[int, ...]
    row: list[int]
    start: int
    end: int
    heard_end: int

    @classmethod
    def of(cls, candidate: Candidate, tokens: tuple[int, ...], row: list[int],
           transcript: Sequence[int]) -> _Alternative:
        start = _common_prefix(transcript, row)
        # The tokens after the phrase are the transcript's own (their common suffix), scored only this far.
        after = min(_common_prefix(transcript[::-1], row[::-1]), len(row) - start, len(transcript) - start)
        return cls(candidate, tokens, row, start, min(len(row), len(row) - after + SCORED_AFTER_PHRASE),
                   min(len(transcript), len(transcript) - after + SCORED_AFTER_PHRASE))


def output_projection(decoder: ResolvedModel) -> np.ndarray:
    """The decoder's token embedding [V, D] (tied with its output projection), from its PyTorch weights."""
    from safetensors import safe_open

    with safe_open(str(decoder.folder / decoder.config.artifacts["torch"]), framework="numpy") as weights:
        return weights.get_tensor("embedding")


class PhraseBooster:
    """Rescoring of final transcripts (see the module docstring); shared by every stream of the stage.
    ``embedding`` is the decoder's output projection (:func:`output_projection`)."""

    def __init__(self, scorer: DynamicBatcher[ScoreJob, np.ndarray], *, tokenizer: WhisperTokenizer,
                 rule: GreedyRule, embedding: np.ndarray, keys: PhoneticKeys, max_candidates: int,
                 min_similarity: float, max_wait_s: float) -> None:
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.rule = rule
        self.embedding = embedding
        self.keys = keys
        self.max_candidates = max_candidates
        self.min_similarity = min_similarity
        self.max_wait_s = max_wait_s

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
        heard_logprobs = heard.logprobs  # position len(prompt) + i: step i
        written = [written_form(c.phrase.text, self.tokenizer, self.rule) for c in candidates]
        texts = [self.tokenizer.encode(c.put_in(raw, w)) for c, w in zip(candidates, written, strict=True)]
        alternatives = [_Alternative.of(c, tuple(t), [*prompt, *t, self.rule.eot][:self.rule.capacity], transcript)
                        for c, t in zip(candidates, texts, strict=True)]
        # A candidate's boost in nats: its phrase's boost per token of the phrase as put in.
        boosts = [c.phrase.boost * len(self.tokenizer.encode(" " + w)) for c, w in zip(candidates, written, strict=True)]
        # Each alternative's first token from the greedy step at its first difference (same prefix); the rest
        # of it can only lose, so one whose first token cannot beat the transcript is never scored.
        scored = []
        for alt, boost in zip(alternatives, boosts, strict=True):
            if alt.start >= len(alt.row):
                continue  # the transcript's own tokens (cut at the decoder's capacity): nothing to gain
            step = alt.start - len(prompt)
            first = heard.logprob_at(step, alt.row[alt.start], self.embedding, self.rule)
            # What the alternative must make up for without the scorer: the boost minus the transcript's part.
            margin = boost - float(heard_logprobs[step:alt.heard_end - len(prompt)].sum())
            if first is None or first + margin > 0:
                scored.append((alt, first, margin))
        CANDIDATES.labels(fate="ruled_out").inc(len(alternatives) - len(scored))
        CANDIDATES.labels(fate="scored").inc(len(scored))
        if not scored:
            BOOSTS.labels(outcome="kept").inc()
            return Boosted(tokens)
        # Positions scored: from the first difference, or the one after it where the greedy step gave it.
        rows = [alt.row[:alt.end] for alt, _, _ in scored]
        froms = [alt.start + (first is not None) for alt, first, _ in scored]
        logprob = np.zeros(0, np.float32)
        if any(f < len(r) for f, r in zip(froms, rows, strict=True)):
            # Boosting gives way under load: past max_wait_s in the queue, the greedy final goes out.
            wait_until = time.monotonic() + self.max_wait_s
            try:
                logprob = await self.scorer.submit(ScoreJob.of(rows, froms, encoded, self.rule.eot),
                                                   deadline_s=wait_until if deadline_s is None else min(deadline_s, wait_until))
            except (DeadlineExceededError, QueueFullError) as e:
                BOOSTS.labels(outcome="busy").inc()
                log.debug("phrase boosting skipped for one final, the scorer is busy: %s", e)
                return Boosted(tokens)
            except EngineError as e:
                BOOSTS.labels(outcome="failed").inc()
                log.warning("phrase boosting skipped for one final: %s", e)
                return Boosted(tokens)
        totals = _segment_sums([len(r) - f for r, f in zip(rows, froms, strict=True)], logprob)
        best, chosen = 0.0, None
        for (alt, first, margin), total in zip(scored, totals, strict=True):
            boosted = (first or 0.0) + total + margin
            if boosted > best:
                best, chosen = boosted, alt
        if chosen is None:
            BOOSTS.labels(outcome="kept").inc()
            return Boosted(tokens)
        BOOSTS.labels(outcome="applied").inc()
        return Boosted(chosen.tokens, chosen.candidate.phrase.text)


def written_form(phrase: str, tokenizer: WhisperTokenizer, rule: GreedyRule) -> str:
    """``phrase`` as the decoder can write it: without the tokens its greedy rule never picks, which would make
    an alternative's log-probability -inf. 91 of the 1,680 catalogue titles have one (":" in "Terminator 2:
    Judgment Day", "/" in "Face/Off", "*" in "M*A*S*H"); the NLP finds each title in the form put in
    ("Terminator 2 Judgment Day"), as it would in a transcript that heard it."""
    parts: list[str] = []
    run: list[int] = []
    for token in tokenizer.encode(" " + phrase):
        if rule.suppressed(token, 1):  # 1: any step after the first (the phrase follows other words)
            parts.append(tokenizer.raw_text(run))
            run = []
        else:
            run.append(token)
    if not parts:
        return phrase
    return " ".join(" ".join([*parts, tokenizer.raw_text(run)]).split())


def _segment_sums(lengths: Sequence[int], values: np.ndarray) -> list[float]:
    """Sums of consecutive segments of ``values`` with the given lengths (the scorer's values come one
    alternative after another)."""
    ends = np.cumsum(lengths, dtype=np.int64)
    return [float(values[end - n:end].sum()) for n, end in zip(lengths, ends, strict=True)]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
