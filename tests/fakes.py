"""Fake stage servicers on a real gRPC server: they test the orchestrator in isolation only.

Acceptance of the real product is tested end to end against the real stages (tests/e2e); these fakes
let the orchestrator's own behaviour — barge-in, stage failures, budget exhaustion — be exercised with
controlled timing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import grpc

from protos import (
    asr_pb2,
    asr_pb2_grpc,
    nlp_pb2,
    nlp_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from services.common import UnavailableError
from services.common.calls import CallServer
from services.common.interceptor import ServiceInterceptor


@dataclass
class FakeTiming:
    nlp_delay_s: float = 0.0
    recommender_delay_s: float = 0.0
    tts_chunks: int = 3
    tts_chunk_delay_s: float = 0.0
    tts_fail_after_chunks: int = -1  # >= 0: the synthesis fails (UNAVAILABLE) after this many chunks
    text: str = "recommend a comedy"
    # Speculative results (when the stream asks for them): at END_OF_UTTERANCE, this transcript (None: none),
    # then `withdraw` (the speaker went on), then the final after `endpoint_delay_s`.
    speculative_text: str | None = None
    withdraw: bool = False
    endpoint_delay_s: float = 0.0
    mark_shown: list[recommender_pb2.MarkShownRequest] = field(default_factory=list)
    utterance_silences: list[tuple[int, int]] = field(default_factory=list)  # SET_UTTERANCE_SILENCE (index, ms)
    tts_cancelled_at: list[float] = field(default_factory=list)
    recommend_requests: list[recommender_pb2.RecommendRequest] = field(default_factory=list)


class FakeASR(asr_pb2_grpc.RecognizerServicer):
    def __init__(self, timing: FakeTiming) -> None:
        self.timing = timing

    async def StreamingRecognize(self, request_iterator, context):
        rate, samples, utterance, pending, speculative = 16000, 0, 0, False, False
        async for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "config":
                rate, speculative = request.config.sample_rate_hz, request.config.speculative_results
            elif kind == "audio":
                samples += len(request.audio) // 2
                pending = True
                yield asr_pb2.StreamingRecognizeResponse(result=asr_pb2.SpeechResult(text="recommend", end_s=samples / rate))
            elif kind == "control" and request.control.action == asr_pb2.RecognizerControl.SET_UTTERANCE_SILENCE:
                self.timing.utterance_silences.append((request.control.utterance_index, request.control.silence_ms))
            elif kind == "control" and pending:
                if speculative and self.timing.speculative_text is not None:
                    yield asr_pb2.StreamingRecognizeResponse(result=asr_pb2.SpeechResult(
                        text=self.timing.speculative_text, speculative=True, end_s=samples / rate, utterance_index=utterance))
                    if self.timing.withdraw:
                        yield asr_pb2.StreamingRecognizeResponse(result=asr_pb2.SpeechResult(
                            speculative=True, withdrawn=True, utterance_index=utterance))
                    await asyncio.sleep(self.timing.endpoint_delay_s)
                yield self._final(samples / rate, utterance)
                utterance, pending = utterance + 1, False
        if pending:
            yield self._final(samples / rate, utterance)

    def _final(self, end_s: float, index: int) -> asr_pb2.StreamingRecognizeResponse:
        return asr_pb2.StreamingRecognizeResponse(result=asr_pb2.SpeechResult(
            text=self.timing.text, is_final=True, stability=1.0, end_s=end_s, utterance_index=index, latency_ms=5.0,
            endpoint_reason=asr_pb2.CLIENT_END_OF_UTTERANCE))


class FakeNLP(nlp_pb2_grpc.UnderstanderServicer):
    def __init__(self, timing: FakeTiming) -> None:
        self.timing = timing
        self._calls = CallServer("fakes", "voxpipe.v1.Understander", "Understand", self.Understand,
                                 nlp_pb2.UnderstandCallReply)

    async def UnderstandCalls(self, request_iterator, context):
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Understand(self, request, context):
        await asyncio.sleep(self.timing.nlp_delay_s)
        return nlp_pb2.UnderstandResponse(intent="recommend", confidence=0.9, normalized_text=request.text,
                                          entities=[nlp_pb2.Entity(type="genre", value="Comedy")], embedding=[0.0] * 384)


class FakeRecommender(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, timing: FakeTiming) -> None:
        self.timing = timing
        self._calls = CallServer("fakes", "voxpipe.v1.Recommender", "Recommend", self.Recommend,
                                 recommender_pb2.RecommendCallReply)

    async def RecommendCalls(self, request_iterator, context):
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Recommend(self, request, context):
        self.timing.recommend_requests.append(request)
        await asyncio.sleep(self.timing.recommender_delay_s)
        items = [recommender_pb2.Item(item_id=i, title=f"Movie {i} (1995)", year=1995, genres=["Comedy"]) for i in (1, 2, 3)]
        return recommender_pb2.RecommendResponse(items=items, strategy="popularity" if request.popularity_only else "query")

    async def Feedback(self, request, context):
        return recommender_pb2.FeedbackResponse(ratings_in_session=1)

    async def MarkShown(self, request, context):
        self.timing.mark_shown.append(request)
        return recommender_pb2.MarkShownResponse(shown_in_session=len(request.item_ids))

    async def GetItems(self, request, context):
        return recommender_pb2.GetItemsResponse()


class FakeTTS(tts_pb2_grpc.SynthesizerServicer):
    def __init__(self, timing: FakeTiming) -> None:
        self.timing = timing
        self._calls = CallServer("fakes", "voxpipe.v1.Synthesizer", "Synthesize", self.Synthesize,
                                 tts_pb2.SynthesizeCallReply, streaming=True)

    async def SynthesizeCalls(self, request_iterator, context):
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Synthesize(self, request, context):
        try:
            for i in range(self.timing.tts_chunks):
                if i == self.timing.tts_fail_after_chunks:
                    raise UnavailableError("fake tts: the voice process died")
                await asyncio.sleep(self.timing.tts_chunk_delay_s)
                yield tts_pb2.SynthesizeResponse(audio=b"\x00\x01" * 220, sample_rate_hz=22050, sentence_index=i,
                                                 last=i == self.timing.tts_chunks - 1)
        except asyncio.CancelledError:
            self.timing.tts_cancelled_at.append(time.monotonic())
            raise


async def start_fake_stages(timing: FakeTiming) -> tuple[grpc.aio.Server, str]:
    """All four fake stages on one real server on 127.0.0.1:0, behind the stages' interceptor (which reports
    each handler's time, as the real stages do)."""
    interceptor = ServiceInterceptor("fakes")
    interceptor.ready = True
    server = grpc.aio.server(interceptors=[interceptor])
    asr_pb2_grpc.add_RecognizerServicer_to_server(FakeASR(timing), server)
    nlp_pb2_grpc.add_UnderstanderServicer_to_server(FakeNLP(timing), server)
    recommender_pb2_grpc.add_RecommenderServicer_to_server(FakeRecommender(timing), server)
    tts_pb2_grpc.add_SynthesizerServicer_to_server(FakeTTS(timing), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def closed_port_address() -> str:
    """An address nothing listens on (for 'stage down' tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"
