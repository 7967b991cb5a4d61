"""Phrase boosting on the real ASR stage (port 0): the scorer agrees with the decoder, a title the greedy pass
mishears is heard with boosting on and not with it off, request phrases work alone, and nothing is put into
a question naming no phrase."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.batcher import DynamicBatcher
from engines.config import BatchingConfig
from engines.repository import ModelRepository, create_engines
from protos import asr_pb2, asr_pb2_grpc, common_pb2
from services.asr import AsrConfig, AsrStage
from services.asr.boosting import (
    BOOSTS,
    SCORER_MODEL,
    Boosted,
    PhraseBooster,
    ScoreJob,
    output_projection,
    scorer_batch_fn,
    written_form,
)
from services.asr.decoding import rule_from_config
from services.asr.features import log_mel
from services.asr.generation import (
    DECODER_MODEL,
    ENCODER_MODEL,
    create_generators,
    encoder_batch_fn,
    transcribe,
)
from services.asr.phrases import PhoneticKeys, PhraseSet
from services.asr.tokenizer import WhisperTokenizer
from services.common import StageSettings
from tests.helpers import running_stage

pytestmark = [pytest.mark.models]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "asr_titles"
REFERENCES = {r["file"]: r for r in json.loads((FIXTURES / "references.json").read_text())}


@pytest.fixture
def asr_root(models_dir) -> Path:
    return models_dir("asr")


@pytest.fixture
def titles_file(tmp_path) -> Path:
    path = tmp_path / "titles.txt"
    path.write_text("Nosferatu\nCasablanca\nThe Usual Suspects\nToy Story\nGattaca\nAmadeus\n")
    return path


def _stage(root: Path, **config) -> AsrStage:
    # The 30 s encoder window: in the 10 s one the fixture's first pass is "what year did not to come out", too far
    # from "Nosferatu" to make it a candidate (title recall under the default windows: docs/bench/titles.md).
    return AsrStage(StageSettings(name="asr", models_dir=root), AsrConfig(encoder_windows_s=(30.0,), **config))


def _config(**kw) -> asr_pb2.RecognitionConfig:
    return asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16_000, **kw)


async def _recognize(channel, name: str, **config) -> asr_pb2.SpeechResult:
    reply = await asr_pb2_grpc.RecognizerStub(channel).Recognize(
        asr_pb2.RecognizeRequest(config=_config(**config), audio=(FIXTURES / name).read_bytes()), timeout=60)
    assert len(reply.results) == 1, reply
    return reply.results[0]


def test_the_scorer_gives_the_greedy_tokens_the_decoders_probabilities(asr_root):
    # The forced decode and the step decoder are the same model: the scorer's log-probability of each greedy
    # token (and of the end token) equals what the decoder's greedy pick reported for it.
    repo = ModelRepository(asr_root)
    encoder = create_engines(repo.resolve(ENCODER_MODEL))[0]
    decoder_model = repo.resolve(DECODER_MODEL)
    generator = create_generators(decoder_model)[0]
    scorer = scorer_batch_fn(create_engines(repo.resolve(SCORER_MODEL))[0])
    rule = rule_from_config(decoder_model.config)
    audio, _ = sf.read(FIXTURES / "nosferatu.wav", dtype="float32")
    result = transcribe(encoder, generator, audio)
    encoded = encoder_batch_fn(encoder)([log_mel(audio)])[0]
    row = [*rule.prompt, *result.tokens, rule.eot]
    other = [*rule.prompt, *result.tokens[:2], rule.eot]  # a second, shorter candidate beside it
    p = len(rule.prompt)
    logprob, = scorer([ScoreJob.of([row, other], [p, p], encoded, rule.eot)])
    assert logprob.shape == (len(row) - p + len(other) - p,)
    full, short = logprob[:len(row) - p], logprob[len(row) - p:]
    np.testing.assert_allclose(np.exp(full), [*result.token_probs, result.eot_prob], atol=2e-3)
    # Rows are independent: the shorter candidate's shared prefix scores the same as in the full row.
    np.testing.assert_allclose(short[:2], full[:2], atol=1e-4)
    # Only the asked-for positions are scored, each as in the full pass.
    last, = scorer([ScoreJob.of([row, other], [len(row) - 1, len(other) - 1], encoded, rule.eot)])
    np.testing.assert_allclose(last, [full[-1], short[-1]], atol=1e-4)
    # Any token's log-probability at a greedy step, from the step's hidden state: the scorer's at that position.
    embedding = output_projection(decoder_model)
    for step, token in ((0, 1867), (1, 7), (len(result.tokens), 338)):
        changed = [*row[:p + step], token, rule.eot]
        expected, = scorer([ScoreJob.of([changed], [p + step], encoded, rule.eot)])
        assert result.logprob_at(step, token, embedding, rule) == pytest.approx(float(expected[0]), abs=1e-3)


class _Scorer:
    """The real scorer model called directly (the booster's unit, without the stage's batcher); counts calls."""

    def __init__(self, fn) -> None:
        self.fn, self.rows = fn, 0

    async def submit(self, job: ScoreJob, deadline_s=None) -> np.ndarray:
        self.rows += len(job.tokens)
        return self.fn([job])[0]


async def test_ruling_candidates_out_by_their_first_token_changes_no_decision(asr_root):
    # The booster rules out a candidate whose first token (from the greedy step) cannot beat the transcript;
    # without the step states it scores every candidate in full. Both must choose the same, for a final that
    # gains a title, one that keeps its transcript and one without titles.
    repo = ModelRepository(asr_root)
    encoder = create_engines(repo.resolve(ENCODER_MODEL))[0]
    decoder_model = repo.resolve(DECODER_MODEL)
    generator = create_generators(decoder_model)[0]
    rule = rule_from_config(decoder_model.config)
    keys = PhoneticKeys()
    titles = PhraseSet([(t, 4.0) for t in (
        "Nosferatu", "Casablanca", "A Christmas Carol", "The Usual Suspects", "Night Falls on Manhattan", "Nightwatch",
        "Tin Men", "Toy Story", "Nixon", "Not Love, Just Frenzy", "The Nutty Professor", "What Happened Was",
        "Christmas Vacation", "Miracle on 34th Street", "Career Girls", "The Carpool", "Moonlight and Valentino",
        "Come See the Paradise", "Comedian Harmonists", "Could Be Worse", "Tomorrow Never Dies", "Two for Tonight",
        "Just Cause", "A Movie", "Sugar Town", "Unforgettable", "You So Crazy")], keys)
    scorer = _Scorer(scorer_batch_fn(create_engines(repo.resolve(SCORER_MODEL))[0]))
    booster = PhraseBooster(scorer, tokenizer=WhisperTokenizer(decoder_model.folder / "tokenizer.json"), rule=rule,  # type: ignore[arg-type]
                            embedding=output_projection(decoder_model), keys=keys, max_candidates=8, min_similarity=0.4,
                            max_wait_s=AsrConfig().phrase_max_wait_ms / 1e3)
    chosen, rows = {}, {}
    for name in REFERENCES:
        audio, _ = sf.read(FIXTURES / name, dtype="float32")
        heard = transcribe(encoder, generator, audio)
        encoded = encoder_batch_fn(encoder)([log_mel(audio)])[0]
        stateless = dataclasses.replace(heard, hidden=np.zeros((0, 0), np.float32), log_norm=np.zeros(0, np.float32))
        scored = []
        for result in (heard, stateless):
            scorer.rows = 0
            chosen.setdefault(name, set()).add(await booster.rescore(result, encoded, [titles], deadline_s=None))
            scored.append(scorer.rows)
        rows[name] = scored
    assert {name: [b.phrase for b in boosted] for name, boosted in chosen.items()} == {
        "nosferatu.wav": ["Nosferatu"], "no_title.wav": [""], "christmas_carol.wav": ["A Christmas Carol"]}
    assert all(ruled <= full for ruled, full in rows.values())
    assert sum(ruled for ruled, _ in rows.values()) < sum(full for _, full in rows.values())


def test_the_pytorch_decoder_gives_the_onnx_decoders_tokens_and_step_states(asr_root):
    # The GPU stack decodes with the PyTorch backend (slots on the device, the states read back with the picks);
    # on the CPU here the same module must give what the ONNX graph gives.
    pytest.importorskip("torch")
    onnx_repo = ModelRepository(asr_root)
    torch_repo = ModelRepository(asr_root, overrides={
        name: {"backend": "torch", "precision": "fp32"} for name in (ENCODER_MODEL, DECODER_MODEL)})
    audio, _ = sf.read(FIXTURES / "nosferatu.wav", dtype="float32")
    expected, got = (transcribe(create_engines(repo.resolve(ENCODER_MODEL))[0],
                                create_generators(repo.resolve(DECODER_MODEL))[0], audio)
                     for repo in (onnx_repo, torch_repo))
    assert got.tokens == expected.tokens
    assert got.hidden.shape == expected.hidden.shape == (len(expected.tokens) + 1, 384)
    np.testing.assert_allclose(got.hidden, expected.hidden, atol=2e-3)
    np.testing.assert_allclose(got.log_norm, expected.log_norm, atol=2e-3)


async def test_a_catalogue_title_is_heard_with_boosting_and_not_without(asr_root, titles_file):
    stage = _stage(asr_root, default_phrases=str(titles_file))
    async with running_stage(stage) as (_, channel):
        off = await _recognize(channel, "nosferatu.wav", disable_default_phrases=True)
        on = await _recognize(channel, "nosferatu.wav")
        plain = await _recognize(channel, "no_title.wav")
    assert "nosferatu" not in off.text.lower() and not off.boosted_phrases, off
    assert "Nosferatu" in on.text and list(on.boosted_phrases) == ["Nosferatu"], on
    assert not plain.boosted_phrases and "tonight" in plain.text.lower(), plain


async def test_request_phrases_alone_and_a_streamed_final(asr_root):
    stage = _stage(asr_root, default_phrases="")
    async with running_stage(stage) as (_, channel):
        none = await _recognize(channel, "nosferatu.wav")
        unrelated = await _recognize(channel, "nosferatu.wav", phrases=[asr_pb2.SpeechPhrase(phrase="Casablanca")])
        boosted = await _recognize(channel, "nosferatu.wav", phrases=[asr_pb2.SpeechPhrase(phrase="Nosferatu", boost=6)])
        pcm = sf.read(FIXTURES / "nosferatu.wav", dtype="int16")[0]
        pcm = np.concatenate([pcm, np.zeros(16_000, np.int16)])

        async def requests():
            yield asr_pb2.StreamingRecognizeRequest(config=_config(phrases=[asr_pb2.SpeechPhrase(phrase="Nosferatu")]))
            for i in range(0, len(pcm), 3200):
                yield asr_pb2.StreamingRecognizeRequest(audio=pcm[i:i + 3200].tobytes())

        streamed = [r.result async for r in asr_pb2_grpc.RecognizerStub(channel).StreamingRecognize(requests())]
    assert not none.boosted_phrases and none.text == unrelated.text and not unrelated.boosted_phrases
    assert "Nosferatu" in boosted.text and list(boosted.boosted_phrases) == ["Nosferatu"]
    assert [r.text for r in streamed if r.is_final] == [boosted.text]
    assert list(streamed[-1].boosted_phrases) == ["Nosferatu"]


def test_the_pytorch_scorer_matches_the_onnx_scorer(asr_root):
    # The GPU stack serves the scorer with the PyTorch backend, from the decoder's weights; on the CPU here the
    # same module and engine must give what the ONNX graph gives.
    pytest.importorskip("torch")
    onnx_repo, torch_repo = ModelRepository(asr_root), ModelRepository(asr_root, overrides={
        SCORER_MODEL: {"backend": "torch", "precision": "fp32"}})
    encoder = create_engines(onnx_repo.resolve(ENCODER_MODEL))[0]
    rule = rule_from_config(onnx_repo.resolve(DECODER_MODEL).config)
    audio, _ = sf.read(FIXTURES / "nosferatu.wav", dtype="float32")
    encoded = encoder_batch_fn(encoder)([log_mel(audio)])[0]
    rows = [[*rule.prompt, 1867, 614, 460, 338, rule.eot], [*rule.prompt, 1867, 614, 7, rule.eot]]
    job = ScoreJob.of(rows, [4, 4], encoded, rule.eot)
    expected, = scorer_batch_fn(create_engines(onnx_repo.resolve(SCORER_MODEL))[0])([job])
    got, = scorer_batch_fn(create_engines(torch_repo.resolve(SCORER_MODEL))[0])([job])
    assert got.shape == expected.shape == (5,)
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_utterances_scored_in_one_call_get_what_each_gets_alone(asr_root, backend):
    # A GPU scores the finals waiting in its queue in one call, their candidate grids (other counts and lengths)
    # padded together; the ONNX graph takes such a batch too (a CPU is served one utterance a call).
    if backend == "torch":
        pytest.importorskip("torch")
    overrides = {SCORER_MODEL: {"backend": "torch", "precision": "fp32", "batch_buckets": []}} \
        if backend == "torch" else {}
    repo = ModelRepository(asr_root, overrides=overrides)
    encoder = create_engines(repo.resolve(ENCODER_MODEL))[0]
    rule = rule_from_config(repo.resolve(DECODER_MODEL).config)
    encoded = [encoder_batch_fn(encoder)([log_mel(sf.read(FIXTURES / name, dtype="float32")[0])])[0]
               for name in list(REFERENCES)[:3]]
    p = len(rule.prompt)
    jobs = [ScoreJob.of([[*rule.prompt, 1867, 614, 460, 338, rule.eot], [*rule.prompt, 1867, 614, 7, rule.eot]],
                        [p + 2, p + 1], encoded[0], rule.eot),
            ScoreJob.of([[*rule.prompt, 440, 1107, 466, 257, 7328, 13, rule.eot]], [p], encoded[1], rule.eot),
            ScoreJob.of([[*rule.prompt, 40, rule.eot], [*rule.prompt, 40, 1842, rule.eot], [*rule.prompt, 7, rule.eot]],
                        [p, p + 1, p], encoded[2], rule.eot)]
    score = scorer_batch_fn(create_engines(repo.resolve(SCORER_MODEL))[0])
    alone = [score([job])[0] for job in jobs]
    together = score(jobs)
    for a, t in zip(alone, together, strict=True):
        assert t.shape == a.shape
        np.testing.assert_allclose(t, a, atol=1e-4)


async def test_a_final_the_busy_scorer_cannot_take_in_time_goes_out_unboosted(asr_root):
    # At load the scorer is a queue: a final that would wait past max_wait_s keeps its greedy transcript (outcome
    # "busy") instead of holding the latency budget; the final the scorer did take is boosted as usual.
    repo = ModelRepository(asr_root)
    encoder = create_engines(repo.resolve(ENCODER_MODEL))[0]
    decoder_model = repo.resolve(DECODER_MODEL)
    keys = PhoneticKeys()
    real = scorer_batch_fn(create_engines(repo.resolve(SCORER_MODEL))[0])

    def slow(jobs):  # the real scorer, held long enough that the second final cannot get in
        time.sleep(0.5)
        return real(jobs)

    batcher = DynamicBatcher("whisper-scorer", [slow], BatchingConfig(max_batch_size=1, max_queue_delay_us=0))
    await batcher.start()
    booster = PhraseBooster(batcher, tokenizer=WhisperTokenizer(decoder_model.folder / "tokenizer.json"),
                            rule=rule_from_config(decoder_model.config), embedding=output_projection(decoder_model),
                            keys=keys, max_candidates=8, min_similarity=0.5, max_wait_s=0.05)
    audio, _ = sf.read(FIXTURES / "nosferatu.wav", dtype="float32")
    heard = transcribe(encoder, create_generators(decoder_model)[0], audio)
    encoded = encoder_batch_fn(encoder)([log_mel(audio)])[0]
    titles = [PhraseSet([("Nosferatu", 4.0)], keys)]
    busy = BOOSTS.labels(outcome="busy")._value.get()
    try:
        first = asyncio.create_task(booster.rescore(heard, encoded, titles, deadline_s=None))
        await asyncio.sleep(0.1)  # the first final's call holds the scorer
        started = time.monotonic()
        second = await booster.rescore(heard, encoded, titles, deadline_s=None)
        assert second == Boosted(heard.tokens)
        assert BOOSTS.labels(outcome="busy")._value.get() == busy + 1
        assert time.monotonic() - started < 0.3  # it did not wait for the scorer (held 0.5 s)
        assert (await first).phrase == "Nosferatu"
    finally:
        await batcher.close()


async def test_transcribe_cli_phrases(asr_root, capsys):
    from clients.api import load_audio
    from clients.cli import build_parser
    from clients.transcribe import TranscribeOptions, transcribe

    args = build_parser().parse_args(["transcribe", "x.wav", "--phrase", "Nosferatu", "--phrase", "Star Trek: Generations",
                                      "--phrase", "Caro Diario:6.5", "--no-default-phrases"])
    assert args.phrase == [("Nosferatu", 0.0), ("Star Trek: Generations", 0.0), ("Caro Diario", 6.5)]
    assert args.no_default_phrases
    path = FIXTURES / "nosferatu.wav"
    pcm, rate = load_audio(path)
    stage = _stage(asr_root, default_phrases="")
    async with running_stage(stage) as (server, _):
        for phrases in ((), (("Nosferatu", 0.0),)):
            options = TranscribeOptions(address=server.address, audio=path, stream=False, as_json=True, speed=0.0,
                                        interim=False, silence_ms=0, timeout_s=60.0, phrases=phrases,
                                        default_phrases=False)
            assert await transcribe(options, pcm, rate) == 0
            (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
            assert line["boosted_phrases"] == [p for p, _ in phrases], line


def test_a_phrase_is_put_in_as_the_decoder_can_write_it(asr_root):
    # Whisper's greedy rule never picks ":" (or "/", "*", " -"), so "Terminator 2: Judgment Day" put in as spelled
    # could never win (log-probability -inf); it goes in as a transcript would have it.
    decoder_model = ModelRepository(asr_root).resolve(DECODER_MODEL)
    tokenizer, rule = WhisperTokenizer(decoder_model.folder / "tokenizer.json"), rule_from_config(decoder_model.config)
    written = {t: written_form(t, tokenizer, rule) for t in (
        "Terminator 2: Judgment Day", "Face/Off", "M*A*S*H", "Pink Floyd - The Wall", "Spider-Man", "Schindler's List",
        "Casablanca", "Café au lait")}
    assert written == {
        "Terminator 2: Judgment Day": "Terminator 2 Judgment Day", "Face/Off": "Face Off", "M*A*S*H": "M A S H",
        "Pink Floyd - The Wall": "Pink Floyd The Wall", "Spider-Man": "Spider-Man", "Schindler's List": "Schindler's List",
        "Casablanca": "Casablanca", "Café au lait": "Café au lait"}
    assert not any(rule.suppressed(t, 1) for text in written.values() for t in tokenizer.encode(" " + text))
