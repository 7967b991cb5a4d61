"""Speculative turns: prepare the answer while the endpoint is still being waited for, send it if it holds.

ASR sends a speculative result once an utterance's trailing silence covers the post-speech pad (its final
decode, started before the endpoint: docs/asr.md). The conversation starts a turn on it at once: the same
:class:`~orchestrator.turn.TurnRunner`, budget, deadlines and trace, but every event it emits is held
(:class:`HeldEvents`) and its side effects wait (:meth:`Speculation.defer`). When the final result arrives:

* it **matches** (:func:`matches`: the same text, so NLP, the recommender and TTS get the same input) and the
  session is as the turn found it: the turn **commits**: the held events go out at once, in order, deferred
  effects run, and the turn goes on live;
* otherwise the turn is cancelled (**discarded**, through the turn's normal cancellation: every downstream
  call ends) and a normal turn starts on the final. A ``withdrawn`` result (the speaker went on) discards it
  too: no audio of a discarded turn ever leaves.

At most one speculative turn per conversation; none starts while the orchestrator is busy
(``[orchestrator] speculation_max_busy``: turns being prepared, i.e. before their first reply audio), so
speculation never costs other conversations their budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Counter

from protos import asr_pb2, assistant_pb2, nlp_pb2

SPECULATIONS = Counter("voxpipe_speculations_total", "Speculative turns by outcome and reason: committed; discarded "
                       "(changed, withdrawn, superseded, session, failed, no final); skipped (busy).",
                       ("outcome", "reason"))

Emit = Callable[[assistant_pb2.ConverseResponse], Awaitable[None]]


def matches(speculative: asr_pb2.SpeechResult, final: asr_pb2.SpeechResult) -> bool:
    """Whether a final transcript confirms a speculative one: the same text (whitespace aside).

    Not "the same intent and entities": the reply's movies also depend on the query embedding of the whole
    text, punctuation included, so only the same text guarantees the same answer as a turn started on the
    final. ASR's speculative result is the final's own decode, so the texts differ only when the audio did.
    """
    return speculative.utterance_index == final.utterance_index and speculative.text.strip() == final.text.strip()


class HeldEvents:
    """A turn's emitter that holds events until :meth:`release`, then sends them in order and goes live.

    Every event is re-numbered with ``turn_index`` as it leaves (a speculative turn learns its index when it
    commits). Records when the first reply audio was ready (emitted) and when it was sent.
    """

    def __init__(self, emit: Emit, clock: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self._clock = clock
        self._held: list[assistant_pb2.ConverseResponse] = []
        self.live = False
        self.turn_index = 0
        self.audio_ready_s: float | None = None
        self.audio_sent_s: float | None = None

    async def __call__(self, response: assistant_pb2.ConverseResponse) -> None:
        if response.HasField("audio") and self.audio_ready_s is None:
            self.audio_ready_s = self._clock()
        if not self.live:
            self._held.append(response)
            return
        await self._send(response)

    async def release(self, turn_index: int) -> None:
        """Send what is held (in order; events emitted meanwhile join the queue), then pass events through."""
        self.turn_index = turn_index
        while self._held:
            await self._send(self._held.pop(0))
        self.live = True  # no await between the last check and here: nothing can be held behind

    async def _send(self, response: assistant_pb2.ConverseResponse) -> None:
        response.turn_index = self.turn_index
        await self._emit(response)
        if response.HasField("audio") and self.audio_sent_s is None:
            self.audio_sent_s = self._clock()


@dataclass(eq=False)
class Speculation:
    """One speculative turn of a conversation: what it was started on, and its way to commit."""

    transcript: asr_pb2.SpeechResult
    events: HeldEvents
    session_version: int
    started_s: float
    task: asyncio.Task | None = None
    _final: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    _effects: list[Callable[[], None]] = field(default_factory=list)
    _calls: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    committed_s: float | None = None
    # Called with the turn's understanding of the speculative text (the adaptive endpoint's judgement).
    on_understood: Callable[[nlp_pb2.UnderstandResponse | None], None] | None = None

    def understood(self, understanding: nlp_pb2.UnderstandResponse | None) -> None:
        """The turn has read the speculative text (``understanding`` None: NLP was skipped or failed)."""
        if self.on_understood is not None:
            self.on_understood(understanding)

    def defer(self, effect: Callable[[], None]) -> None:
        """Apply ``effect`` (to the conversation's state) when the turn commits, never before."""
        self._effects.append(effect)

    def defer_call(self, call: Callable[[], Awaitable[None]]) -> None:
        """Start ``call`` (a downstream call with a side effect; it handles its own errors) at the commit,
        beside the released events rather than before them."""
        self._calls.append(call)

    async def committed(self):
        """Wait for the commit; returns the final's ``TurnInput``; raises CancelledError once discarded."""
        return await asyncio.shield(self._final)

    async def commit(self, final_turn, turn_index: int, spawn: Callable[[Awaitable[None]], object],
                     clock: Callable[[], float] = time.monotonic) -> None:
        """The final matched: apply the deferred effects, start the deferred calls (``spawn`` gives them an
        owner), release the held events, and let the turn finish."""
        self.committed_s = clock()
        for effect in self._effects:
            effect()
        for call in self._calls:
            spawn(call())
        self._effects.clear()
        self._calls.clear()
        await self.events.release(turn_index)
        self._final.set_result(final_turn)  # after the release: the report reads when the first audio left

    def discard(self) -> None:
        """Cancel the turn; :meth:`committed` raises CancelledError from now on, even in a turn that missed its
        task's cancellation (swallowed by a library on the way), so a discarded turn can never go on."""
        self._final.cancel()
        if self.task is not None:
            self.task.cancel()

    def hidden_ms(self) -> float:
        """Of the turn's work (start -> first audio ready), the part done before the commit."""
        if self.committed_s is None:
            return 0.0
        done_s = self.events.audio_ready_s if self.events.audio_ready_s is not None else self.committed_s
        return max(min(done_s, self.committed_s) - self.started_s, 0.0) * 1e3
