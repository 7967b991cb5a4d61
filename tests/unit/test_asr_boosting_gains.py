"""Phrase boosting's arithmetic: an alternative against the transcript counts only the positions from its first
difference, with the scorer's values laid out one alternative after another (``ScoreJob.of``)."""

from __future__ import annotations

import numpy as np
import pytest

from services.asr.boosting import ScoreJob, _common_prefix, _gains

PROMPT = [50257, 50362]
EOT = 50256


def test_score_job_asks_for_each_row_from_its_start_and_pads():
    rows = [[*PROMPT, 10, 11, EOT], [*PROMPT, 10, 12, 13, EOT]]
    job = ScoreJob.of(rows, [3, 3], encoded=None, pad=EOT)  # type: ignore[arg-type]
    assert job.tokens.shape == (2, 6) and job.tokens[0, 5] == EOT
    assert job.score_at.tolist() == [3, 4, 6 + 3, 6 + 4, 6 + 5]


def test_gains_compare_each_alternative_with_the_transcript_from_its_first_difference():
    transcript = [*PROMPT, 10, 11, 12, EOT]
    heard = np.log([0.9, 0.5, 0.8, 0.95])  # tokens 10, 11, 12, EOT: positions 2..5
    alternatives = [[*PROMPT, 10, 21, 12, EOT], [*PROMPT, 30, EOT]]
    starts = [_common_prefix(transcript, r) for r in alternatives]
    assert starts == [3, 2]
    values = {(0, 3): -0.1, (0, 4): -0.3, (0, 5): -0.2, (1, 2): -2.0, (1, 3): -0.5}
    flat = np.array([values[(i, j)] for i, (r, s) in enumerate(zip(alternatives, starts, strict=True)) for j in range(s, len(r))])
    gains = _gains([len(r) for r in alternatives], starts, flat, heard, len(PROMPT))
    expected = [(-0.1 - 0.3 - 0.2) - float(heard[1:].sum()), (-2.0 - 0.5) - float(heard.sum())]
    assert gains == pytest.approx(expected)
