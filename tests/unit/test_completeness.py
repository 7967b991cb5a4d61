"""The adaptive endpoint's judgement of a transcript up to a pause (orchestrator/completeness.py)."""

from __future__ import annotations

import pytest

from orchestrator.completeness import AdaptiveEndpoint, Judgement, judge
from protos import nlp_pb2


def _nlp(intent: str, confidence: float = 0.99, **entities: str) -> nlp_pb2.UnderstandResponse:
    return nlp_pb2.UnderstandResponse(intent=intent, confidence=confidence, entities=[
        nlp_pb2.Entity(type=kind, value=value) for kind, value in entities.items()])


@pytest.mark.parametrize(("text", "understanding", "expected"), [
    ("Recommend a comedy from the nineties.", _nlp("recommend", genre="Comedy"), Judgement.COMPLETE),
    ("Something like Toy Story?", _nlp("similar_to", title="Toy Story (1995)"), Judgement.COMPLETE),
    ("I loved it.", _nlp("rate", rating="5"), Judgement.COMPLETE),
    ("Something like...", _nlp("similar_to"), Judgement.INCOMPLETE),
    ("Recommend a comedy from the", _nlp("recommend", genre="Comedy"), Judgement.INCOMPLETE),
    ("Tell me about", _nlp("movie_info"), Judgement.INCOMPLETE),
    ("What year did", _nlp("movie_info"), Judgement.INCOMPLETE),  # the intent lacks its title
    ("Recommend something with,", _nlp("recommend"), Judgement.INCOMPLETE),
    ("Give Heathers", _nlp("rate", title="Heathers (1989)"), Judgement.INCOMPLETE),  # no rating yet
    ("What year did", _nlp("recommend"), Judgement.INCOMPLETE),  # ends on an auxiliary, whatever NLP guessed
    ("I want", _nlp("recommend"), Judgement.INCOMPLETE),
    ("Recommend a comedy.", _nlp("recommend", confidence=0.5), Judgement.UNSURE),
    ("What's the weather?", _nlp("unknown", confidence=0.9), Judgement.UNSURE),
    ("Recommend a comedy.", None, Judgement.UNSURE),  # NLP skipped
    ("...", _nlp("recommend"), Judgement.UNSURE),
])
def test_judgement(text, understanding, expected):
    assert judge(text, understanding, min_confidence=0.8) is expected


def test_silences_and_their_bounds():
    endpoint = AdaptiveEndpoint(complete_silence_ms=150, incomplete_silence_ms=1500)
    assert [endpoint.silence_ms(j) for j in Judgement] == [150, 1500, None]
    assert AdaptiveEndpoint(unsure_silence_ms=600).silence_ms(Judgement.UNSURE) == 600
    with pytest.raises(ValueError, match="complete_silence_ms=20 is outside 50..10000"):
        AdaptiveEndpoint(complete_silence_ms=20)
    with pytest.raises(ValueError, match="min_confidence=2"):
        AdaptiveEndpoint(min_confidence=2)
