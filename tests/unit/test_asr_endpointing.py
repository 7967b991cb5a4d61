"""VAD endpointing on synthetic speech probabilities (32 ms frames)."""

from __future__ import annotations

from services.asr.endpointing import Endpointer, EndpointerConfig, EventKind


def _run(probs: list[float], **config) -> list[tuple[EventKind, int, int, int, bool]]:
    ep = Endpointer(EndpointerConfig(**config))
    out = []
    for p in probs:
        out += [(e.kind, e.frame, e.start_frame, e.end_frame, e.forced) for e in ep.push(p)]
    return out


def test_utterance_start_tail_end():
    # 5 quiet frames, 20 speech frames (640 ms), then silence. 300 ms = 10 frames, 100 ms pad = 4 frames.
    events = _run([0.0] * 5 + [0.9] * 20 + [0.0] * 15, silence_ms=300, min_speech_ms=150, post_pad_ms=100)
    assert events == [
        (EventKind.START, 9, 5, 10, False),    # 150 ms of speech = 5 frames: confirmed at frame 9
        (EventKind.TAIL, 28, 5, 25, False),    # 4 silent frames after the last speech frame (24)
        (EventKind.END, 34, 5, 25, False),     # 10 silent frames: endpoint, speech ended at frame 25
    ]


def test_short_burst_is_noise():
    assert _run([0.9] * 3 + [0.0] * 20, min_speech_ms=150) == []


def test_speech_resuming_before_endpoint_continues_the_utterance():
    probs = [0.9] * 10 + [0.0] * 6 + [0.9] * 10 + [0.0] * 12
    kinds = [(k, f) for k, f, *_ in _run(probs, silence_ms=300, post_pad_ms=100)]
    assert kinds == [(EventKind.START, 4), (EventKind.TAIL, 13), (EventKind.RESUME, 16),
                     (EventKind.TAIL, 29), (EventKind.END, 35)]


def test_hysteresis_frames_neither_start_nor_reset_silence():
    # 0.4 is between threshold - 0.15 and threshold: it does not count as speech or as silence start.
    probs = [0.9] * 10 + [0.4] * 20
    assert [k for k, *_ in _run(probs)] == [EventKind.START]
    probs = [0.9] * 10 + [0.0] * 5 + [0.4] * 5
    events = _run(probs, silence_ms=300)
    assert [k for k, *_ in events] == [EventKind.START, EventKind.TAIL, EventKind.END]
    assert events[-1][1] == 19  # the silence timer kept running through the 0.4 frames


def test_two_utterances():
    probs = ([0.9] * 10 + [0.0] * 12) * 2
    events = _run(probs, silence_ms=300)
    ends = [(s, e) for k, _, s, e, _ in events if k is EventKind.END]
    assert ends == [(0, 10), (22, 32)]


def test_max_utterance_length_forces_an_end():
    events = _run([0.9] * 100, max_utterance_ms=1000)  # 1 s = 32 frames
    ends = [(f, s, e, forced) for k, f, s, e, forced in events if k is EventKind.END]
    assert ends[0] == (31, 0, 32, True)
    assert [k for k, *_ in events].count(EventKind.START) == 3  # speech goes on: new utterances


def test_force_end():
    ep = Endpointer(EndpointerConfig())
    assert ep.force_end() is None
    for p in [0.9] * 8:
        ep.push(p)
    event = ep.force_end()
    assert event is not None and event.kind is EventKind.END and event.forced
    assert (event.start_frame, event.end_frame) == (0, 8)
    assert not ep.pending and ep.force_end() is None


def test_force_end_takes_a_candidate_too():
    ep = Endpointer(EndpointerConfig(min_speech_ms=500))
    ep.push(0.0)
    ep.push(0.9)
    assert ep.pending and not ep.in_speech
    event = ep.force_end()
    assert event is not None and event.start_frame == 1


def _push(ep: Endpointer, probs: list[float]) -> list[tuple[EventKind, int]]:
    return [(e.kind, e.frame) for p in probs for e in ep.push(p)]


def test_a_shorter_utterance_silence_ends_the_utterance_at_once_when_already_reached():
    ep = Endpointer(EndpointerConfig(silence_ms=300, post_pad_ms=100))  # 10 and 4 frames
    assert _push(ep, [0.9] * 10 + [0.0] * 6) == [(EventKind.START, 4), (EventKind.TAIL, 13)]
    end = ep.set_silence(150)  # 5 frames: 6 silent frames have passed
    assert (end.kind, end.start_frame, end.end_frame, end.forced) == (EventKind.END, 0, 10, False)
    assert not ep.pending and ep.set_silence(150) is None  # nothing left to end


def test_a_longer_utterance_silence_holds_the_end_until_speech_resumes():
    ep = Endpointer(EndpointerConfig(silence_ms=300, post_pad_ms=100))
    _push(ep, [0.9] * 10 + [0.0] * 5)
    assert ep.set_silence(1000) is None  # 32 frames
    assert _push(ep, [0.0] * 20) == []  # past 300 ms, no end
    # Speech resumes: the judgement was of the speech before the pause; the next pause ends at 300 ms again.
    events = _push(ep, [0.9] * 5 + [0.0] * 10)
    assert [k for k, _ in events] == [EventKind.RESUME, EventKind.TAIL, EventKind.END]
    # A set silence ends with its utterance.
    _push(ep, [0.9] * 10 + [0.0] * 4)
    assert ep.set_silence(2000) is None
    assert [k for k, _ in _push(ep, [0.0] * 60)] == [EventKind.END]
    assert [k for k, _ in _push(ep, [0.9] * 10 + [0.0] * 10)] == [EventKind.START, EventKind.TAIL, EventKind.END]
