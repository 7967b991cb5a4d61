"""Is what the user said so far a whole request? The adaptive endpoint's judgement (docs/ARCHITECTURE.md).

A fixed trailing silence both cuts off slow speakers ("something like... Toy Story") and makes everyone wait
after a complete question. A speculative turn has the transcript up to the pause and the NLP's reading of it
before the endpoint, so the conversation answers ASR's speculative result with a silence for that utterance
(``SET_UTTERANCE_SILENCE``): short when the request is complete, long when it visibly is not, none (the
stream's own endpoint) when unsure. This module owns the rule:

* **incomplete**: the text ends in a word that needs a continuation ("like", "from the", "about", ...) or in
  "...", ",", "-"; or the intent, known with at least ``min_confidence``, lacks the entity it needs
  (``similar_to`` and ``movie_info`` a title, ``rate`` a rating);
* **complete**: otherwise, when the intent is known with at least ``min_confidence``;
* **unsure**: otherwise (no understanding, an unknown or uncertain intent).

Only a judgement that reaches ASR before the utterance has ended changes anything: on a GPU the speculative
result comes ~200 ms into the silence, on the 2-core CPU after a 300 ms endpoint (docs/bench/speculation.md).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from protos import nlp_pb2
from services.common.endpoint_silence import SILENCE_RANGE, silence_in_range

# Words a request does not end on: determiners, prepositions, conjunctions, auxiliaries ("what year did") and the
# verbs that ask for an object ("I want", "give"); not pronouns ("I loved it") nor "watch" ("what should I watch").
CONTINUATIONS = frozenset("""
a an the this that these those my your their his her our some any another every
of from to for with without by about like as than in on at into between before after during since until
and or but nor so if because whether
do does did is are was were can could would will should have has
want need give show play find tell recommend suggest
""".split())
# The entity an intent cannot be answered without.
REQUIRED_ENTITY = {"similar_to": "title", "movie_info": "title", "rate": "rating"}
_WORDS = re.compile(r"[a-z0-9']+")


class Judgement(enum.Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNSURE = "unsure"


def judge(text: str, understanding: nlp_pb2.UnderstandResponse | None, *, min_confidence: float) -> Judgement:
    """Whether ``text`` (a transcript up to a pause) with the NLP's ``understanding`` of it is a whole request."""
    words = _WORDS.findall(text.lower())
    if not words:
        return Judgement.UNSURE
    if text.rstrip().endswith(("...", "\u2026", ",", "-")) or words[-1] in CONTINUATIONS:
        return Judgement.INCOMPLETE
    if understanding is None or understanding.intent in ("", "unknown"):
        return Judgement.UNSURE
    if understanding.confidence < min_confidence:
        return Judgement.UNSURE
    needed = REQUIRED_ENTITY.get(understanding.intent)
    if needed is not None and not any(e.type == needed for e in understanding.entities):
        return Judgement.INCOMPLETE
    return Judgement.COMPLETE


@dataclass(frozen=True, kw_only=True)
class AdaptiveEndpoint:
    """``[orchestrator] adaptive_endpoint``'s settings: the silence that answers each judgement."""

    complete_silence_ms: int = 200
    incomplete_silence_ms: int = 1200
    unsure_silence_ms: int = 0  # 0: the stream's own
    min_confidence: float = 0.8

    def __post_init__(self) -> None:
        for name in ("complete_silence_ms", "incomplete_silence_ms", "unsure_silence_ms"):
            value = getattr(self, name)
            if not (silence_in_range(value) or (name == "unsure_silence_ms" and value == 0)):
                raise ValueError(f"{name}={value} is outside {SILENCE_RANGE}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence={self.min_confidence} is outside 0..1")

    def silence_ms(self, judgement: Judgement) -> int | None:
        """The utterance's silence for ``judgement``; None: the stream's own."""
        return {Judgement.COMPLETE: self.complete_silence_ms, Judgement.INCOMPLETE: self.incomplete_silence_ms,
                Judgement.UNSURE: self.unsure_silence_ms or None}[judgement]
