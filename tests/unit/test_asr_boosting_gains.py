"""Phrase boosting's arithmetic: an alternative against the transcript counts only the positions from its first
difference to ``SCORED_AFTER_PHRASE`` tokens after the phrase, with the scorer's values laid out one alternative
after another (``ScoreJob.of``)."""

from __future__ import annotations

import numpy as np
import pytest

from services.asr.boosting import SCORED_AFTER_PHRASE, ScoreJob, _Alternative, _segment_sums

PROMPT = [50257, 50362]
EOT = 50256


def test_score_job_asks_for_each_row_from_its_start_and_pads():
    rows = [[*PROMPT, 10, 11, EOT], [*PROMPT, 10, 12, 13, EOT]]
    job = ScoreJob.of(rows, [3, 3], encoded=None, pad=EOT)  # type: ignore[arg-type]
    assert job.tokens.shape == (2, 6) and job.tokens[0, 5] == EOT
    assert job.score_at.tolist() == [3, 4, 6 + 3, 6 + 4, 6 + 5]


def test_an_alternative_is_compared_from_its_first_difference_to_a_few_tokens_after_the_phrase():
    assert SCORED_AFTER_PHRASE == 3
    transcript = [*PROMPT, 10, 11, 12, 13, 14, 15, 16, EOT]
    # 11 12 -> 21 22 23: the phrase is longer than the span; five of the transcript's tokens follow it.
    alt = _Alternative.of(None, (), [*PROMPT, 10, 21, 22, 23, 13, 14, 15, 16, EOT], transcript)  # type: ignore[arg-type]
    assert (alt.start, alt.end, alt.heard_end) == (3, 9, 8)  # alternative: 21 22 23 + 13 14 15; transcript: 11 12 + 13 14 15
    # Near the end: the end token is the last compared.
    alt = _Alternative.of(None, (), [*PROMPT, 10, 11, 12, 13, 14, 30, EOT], transcript)  # type: ignore[arg-type]
    assert (alt.start, alt.end, alt.heard_end) == (7, 9, 10)
    # A phrase inserted with nothing replaced: the common suffix stops at the first difference.
    alt = _Alternative.of(None, (), [*PROMPT, 10, 40, 11, 12, 13, 14, 15, 16, EOT], transcript)  # type: ignore[arg-type]
    assert (alt.start, alt.end, alt.heard_end) == (3, 7, 6)


def test_segment_sums_split_the_scorers_values_by_alternative():
    values = np.array([-0.1, -0.3, -0.2, -2.0, -0.5])
    assert _segment_sums([3, 0, 2], values) == pytest.approx([-0.6, 0.0, -2.5])
    assert _segment_sums([], np.zeros(0)) == []
