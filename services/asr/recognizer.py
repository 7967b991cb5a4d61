"""The ASR core over the engine layer: VAD frames, and transcription of one utterance.

Log-mel features are computed in a worker thread (never on the event loop or a GPU instance's thread);
utterances of concurrent streams share encoder batches (a :class:`DynamicBatcher`), and their decoding
shares decoder steps: the :class:`GenerationScheduler` admits each utterance into a slot of a decoder
instance and advances every active slot together, one token per step, until it finishes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from engines.batcher import DynamicBatcher
from engines.generation import GenerationScheduler
from services.asr.boosting import PhraseBooster
from services.asr.config import AsrConfig, StreamSettings
from services.asr.decoding import DecodeResult
from services.asr.features import log_mel, window_frames
from services.asr.generation import EncodedUtterance
from services.asr.phrases import PhraseSet
from services.asr.tokenizer import WhisperTokenizer
from services.asr.vad import VadJob, VadResult

INTERIMS = Counter("voxpipe_asr_interims_total", "Interim decodes due, by outcome: started, skipped_load (the "
                   "engines were busy), skipped_stream (the stream's previous interim was still decoding).",
                   ("outcome",))


@dataclass(frozen=True, kw_only=True)
class Transcript:
    """One decoded utterance."""

    text: str
    tokens: tuple[int, ...]
    confidence: float
    no_speech: bool
    boosted_phrases: tuple[str, ...] = ()


class SpeechRecognizer:
    """Shared by every RPC of the stage; holds the batchers and the tokenizer."""

    def __init__(self, *, encoder: DynamicBatcher[np.ndarray, EncodedUtterance],
                 decoder: GenerationScheduler[EncodedUtterance, DecodeResult],
                 vad: DynamicBatcher[VadJob, VadResult], tokenizer: WhisperTokenizer, config: AsrConfig,
                 booster: PhraseBooster | None = None, default_phrases: PhraseSet | None = None,
                 gpu: bool = False) -> None:
        self.encoder = encoder
        self.gpu = gpu
        self.decoder = decoder
        self.vad_batcher = vad
        self.tokenizer = tokenizer
        self.config = config
        self.booster = booster
        self.default_phrases = default_phrases
        self.interims_in_flight = 0
        self.finals_in_flight = 0
        self.windows_s = config.windows_s(gpu=gpu)

    async def phrase_sets(self, settings: StreamSettings) -> tuple[PhraseSet, ...]:
        """The phrases a stream's finals are boosted with: the stage's defaults unless the request switched
        them off, and the request's own (their phonetic keys computed in a worker thread)."""
        if self.booster is None:
            return ()
        sets = [self.default_phrases] if settings.default_phrases and self.default_phrases else []
        if settings.phrases:
            sets.append(await asyncio.to_thread(PhraseSet, settings.phrases, self.booster.keys))
        return tuple(sets)

    def interim_gate(self) -> bool:
        """Whether an interim decode may start now; counts a refusal as skipped for load.

        Interims are best effort and must never starve finals. On the CPU an interim's encoder pass (the
        whole window) would delay the next final by its whole duration, so it starts only when no final
        is decoding or queued and the encoder is idle. On a GPU interims of many streams share batches with
        the finals (which sort first by deadline and run on the high-priority stream), so they start while
        the engines' queues are short (``interim_max_queue``) and half the decoder's slots are free, and stop
        as the queues grow.
        """
        cap = self.config.max_interims_in_flight or (64 if self.gpu else 1)
        if self.interims_in_flight >= cap:
            allowed = False
        elif self.gpu:  # half the decoder's slots stay free for finals
            allowed = (self.encoder.queue_depth + self.decoder.queue_depth < self.config.interim_max_queue
                       and self.decoder.active < self.decoder.slots // 2)
        else:
            allowed = self.finals_in_flight == 0 and self.encoder.queue_depth == 0
        INTERIMS.labels(outcome="started" if allowed else "skipped_load").inc()
        return allowed

    def track(self, task: asyncio.Task, *, final: bool) -> asyncio.Task:
        """Count ``task`` as an in-flight final or interim until it is done (also if cancelled unstarted)."""
        if final:
            self.finals_in_flight += 1
            task.add_done_callback(lambda _: self._done(final=True))
        else:
            self.interims_in_flight += 1
            task.add_done_callback(lambda _: self._done(final=False))
        return task

    def _done(self, *, final: bool) -> None:
        if final:
            self.finals_in_flight -= 1
        else:
            self.interims_in_flight -= 1

    async def vad(self, job: VadJob) -> VadResult:
        """Speech probabilities of a stream's next frames."""
        return await self.vad_batcher.submit(job)

    async def transcribe(self, audio_16k: np.ndarray, *, deadline_s: float | None, final: bool = True,
                         phrases: tuple[PhraseSet, ...] = ()) -> Transcript:
        """Greedy transcript of one utterance (<= 30 s of 16 kHz float32, encoded in the shortest of the stage's
        encoder windows it fills at most half of: ``features.window_frames``). A final is urgent on the GPU (its
        batches take the high-priority CUDA stream); an interim is not. A final with ``phrases`` is then
        rescored with the candidate phrases (``boosting.py``)."""
        mel = await asyncio.to_thread(log_mel, audio_16k, window_frames(len(audio_16k), self.windows_s))
        enc = await self.encoder.submit(mel, deadline_s=deadline_s, urgent=final)
        result = await self.decoder.generate(enc, deadline_s=deadline_s, urgent=final)
        # faster-whisper's no-speech rule: a confident <|nocaptions|> and a weak transcript mean silence.
        no_speech = (result.no_speech_prob > self.config.no_speech_prob
                     and result.avg_logprob < self.config.logprob_threshold)
        tokens, boosted = result.tokens, ()
        if final and phrases and not no_speech and tokens and self.booster is not None:
            rescored = await self.booster.rescore(result, enc, phrases, deadline_s=deadline_s)
            tokens, boosted = rescored.tokens, (rescored.phrase,) if rescored.phrase else ()
        text = "" if no_speech else self.tokenizer.decode(tokens)
        return Transcript(text=text, tokens=tokens, confidence=result.confidence if text else 0.0,
                          no_speech=no_speech, boosted_phrases=boosted)
