"""Scaling on one host, as units: stage processes in the settings, MPS daemon handling (a fake control
binary), deadline classes on the GPU (the batcher and scheduler mark each batch), the interim gate, and the
load generator's summary."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from clients.bench import BenchOptions, summarize
from clients.load import GpuSampler, LoadResult
from engines import priority
from engines.batcher import DynamicBatcher
from engines.config import BatchingConfig
from engines.generation import GenerationEngine, GenerationScheduler
from services import launcher, mps
from services.asr.config import AsrConfig
from services.asr.recognizer import INTERIMS, SpeechRecognizer
from services.common import settings
from services.common.settings import SettingsError, split_addresses

# -- stage processes -----------------------------------------------------------------------------------


def test_a_stage_with_processes_listens_on_port_plus_100_i_and_its_callers_get_every_address():
    stack = settings.load(env={"VOXPIPE_NLP__PROCESSES": "3", "VOXPIPE_NLP__PORT": "7000",
                               "VOXPIPE_NLP__METRICS_PORT": "7500"})
    nlp = stack.server("nlp")
    assert nlp.addresses == ("127.0.0.1:7000", "127.0.0.1:7100", "127.0.0.1:7200")
    assert (nlp.process(2).port, nlp.process(2).metrics_port, nlp.process(2).processes) == (7200, 7700, 1)
    peer = stack.stage("orchestrator").peers["nlp"]
    assert split_addresses(peer) == nlp.addresses
    assert stack.stage("nlp").server.processes == 3  # the stage's own options do not see server keys
    assert "processes" not in stack.stage("nlp").options


def test_bad_process_settings_are_refused_by_name():
    with pytest.raises(SettingsError, match=r"\[nlp\] processes=0 must be >= 1"):
        settings.load(env={"VOXPIPE_NLP__PROCESSES": "0"}).server("nlp")
    with pytest.raises(SettingsError, match="needs a fixed port"):
        settings.load(env={"VOXPIPE_TTS__PROCESSES": "2", "VOXPIPE_TTS__PORT": "0"}).server("tts")
    with pytest.raises(SettingsError, match="recommender stage keeps session state"):
        settings.load(env={"VOXPIPE_RECOMMENDER__PROCESSES": "2"}).stage("orchestrator")
    with pytest.raises(SettingsError, match=r"mps_active_thread_percentage=150 is outside 0..100"):
        settings.load(env={"VOXPIPE_ASR__MPS_ACTIVE_THREAD_PERCENTAGE": "150"}).server("asr")
    with pytest.raises(SettingsError, match="VOXPIPE_ASR__PROCESSES='many'"):
        settings.load(env={"VOXPIPE_ASR__PROCESSES": "many"}).server("asr")


def test_processes_of_two_stages_on_one_port_are_refused_before_anything_starts():
    stack = settings.load(env={"VOXPIPE_ASR__PROCESSES": "2", "VOXPIPE_ASR__PORT": "7000",
                               "VOXPIPE_NLP__PORT": "7100"})
    with pytest.raises(SettingsError, match=r"nlp port 7100 is also asr\[1\] port"):
        stack.check_ports(["asr", "nlp"])
    with pytest.raises(launcher.LaunchError, match="asr"):
        asyncio.run(launcher.launch(stack, stages=["asr", "nlp"]))


def test_mps_needs_a_gpu_stack():
    with pytest.raises(launcher.LaunchError, match="needs --device cuda"):
        asyncio.run(launcher.launch(settings.load(env={}), stages=["nlp"], use_mps=True))


# -- MPS -------------------------------------------------------------------------------------------------

FAKE_CONTROL = """\
#!{python}
# A stand-in for nvidia-cuda-mps-control: "-d" starts the "daemon" (a marker file beside the pipe);
# otherwise it reads one command and answers it while the marker exists.
import os, sys
pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
marker = os.path.join(pipe, "running")
if sys.argv[1:] == ["-d"]:
    os.makedirs(pipe, exist_ok=True)
    open(os.path.join(pipe, "control"), "w").close()
    open(marker, "w").close()
    sys.exit(0)
if not os.path.exists(marker):
    print("Cannot find MPS control daemon process"); sys.exit(1)
command = sys.stdin.readline().strip()
if command == "quit":
    os.remove(marker)
elif command != "get_server_list":
    sys.exit(2)
"""


@pytest.fixture
def fake_control(tmp_path: Path) -> str:
    path = tmp_path / "nvidia-cuda-mps-control"
    path.write_text(FAKE_CONTROL.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def test_mps_daemon_is_started_under_the_run_folder_and_only_ours_is_stopped(tmp_path, fake_control):
    async def scenario() -> None:
        ours = await mps.start(tmp_path / "run", {}, binary=fake_control)
        assert ours.started and ours.pipe_dir == tmp_path / "run" / "mps" / "pipe"
        assert ours.env()["CUDA_MPS_PIPE_DIRECTORY"] == str(ours.pipe_dir)
        # A second stack joins the running daemon, and leaves it running when it stops.
        joined = await mps.start(tmp_path / "run", {}, binary=fake_control)
        assert not joined.started and joined.pipe_dir == ours.pipe_dir
        await mps.stop(joined, binary=fake_control)
        assert (ours.pipe_dir / "running").exists()
        await mps.stop(ours, binary=fake_control)
        assert not (ours.pipe_dir / "running").exists()

    asyncio.run(scenario())


def test_a_daemon_named_by_the_environment_is_joined(tmp_path, fake_control):
    async def scenario() -> None:
        theirs = await mps.start(tmp_path / "theirs", {}, binary=fake_control)
        joined = await mps.start(tmp_path / "run", {"CUDA_MPS_PIPE_DIRECTORY": str(theirs.pipe_dir)},
                                 binary=fake_control)
        assert not joined.started and joined.pipe_dir == theirs.pipe_dir
        assert not (tmp_path / "run" / "mps").exists()
        await mps.stop(theirs, binary=fake_control)

    asyncio.run(scenario())


def test_a_missing_control_binary_is_a_clear_error(tmp_path):
    with pytest.raises(mps.MpsError, match="not found on PATH: MPS needs the NVIDIA driver"):
        asyncio.run(mps.start(tmp_path, {}, binary="no-such-mps-control"))


# -- deadline classes ------------------------------------------------------------------------------------


def test_a_request_is_urgent_by_its_callers_word_else_by_its_slack():
    assert priority.classify(True, None, 0.0, 500)
    assert not priority.classify(False, 0.1, 0.0, 500)
    assert priority.classify(None, 0.4, 0.0, 500)
    assert not priority.classify(None, 0.6, 0.0, 500)
    assert not priority.classify(None, None, 0.0, 500)
    assert not priority.classify(None, 0.1, 0.0, 0)  # slack 0: nothing is urgent by deadline
    assert not priority.urgent()
    with priority.running(True):
        assert priority.urgent()
    assert not priority.urgent()


def test_the_batcher_marks_a_batch_urgent_on_the_instance_thread_when_any_request_is():
    async def scenario() -> list[bool]:
        batcher = DynamicBatcher("marks", [lambda items: [priority.urgent()] * len(items)],
                                 BatchingConfig(max_batch_size=1, max_queue_delay_us=0))
        await batcher.start()
        try:
            loop = asyncio.get_running_loop()
            return [await batcher.submit(1, urgent=True), await batcher.submit(2),
                    await batcher.submit(3, deadline_s=loop.time() + 0.1),
                    await batcher.submit(4, deadline_s=loop.time() + 5.0)]
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) == [True, False, True, False]


class _Marking(GenerationEngine[int, bool]):
    """Each sequence finishes after one step with whether that step ran marked urgent."""

    slots = 4

    def prefill(self, batch: Sequence[tuple[int, int]]) -> None:
        pass

    def step(self, active: Sequence[int]) -> dict[int, bool]:
        return dict.fromkeys(active, priority.urgent())

    def release(self, slot: int) -> None:
        pass


def test_the_generation_scheduler_marks_each_step_by_its_sequences():
    async def scenario() -> tuple[bool, bool]:
        scheduler = GenerationScheduler("marks", [_Marking()], BatchingConfig())
        await scheduler.start()
        try:
            return await scheduler.generate(1, urgent=True), await scheduler.generate(2)
        finally:
            await scheduler.close()

    assert asyncio.run(scenario()) == (True, False)


# -- interims ----------------------------------------------------------------------------------------------


def _recognizer(*, gpu: bool, encoder_queue=0, decoder_queue=0, active=0, slots=64, finals=0, **config):
    encoder = SimpleNamespace(queue_depth=encoder_queue)
    decoder = SimpleNamespace(queue_depth=decoder_queue, active=active, slots=slots)
    r = SpeechRecognizer(encoder=encoder, decoder=decoder, vad=None, tokenizer=None, config=AsrConfig(**config),
                         gpu=gpu)
    r.finals_in_flight = finals
    return r


def _count(outcome: str) -> float:
    return INTERIMS.labels(outcome=outcome)._value.get()


def test_on_a_gpu_interims_share_the_engines_until_their_queues_grow_or_half_the_slots_are_taken():
    skipped = _count("skipped_load")
    assert _recognizer(gpu=True, finals=3, encoder_queue=2, decoder_queue=3, active=10).interim_gate()
    assert not _recognizer(gpu=True, encoder_queue=4, decoder_queue=4).interim_gate()
    assert not _recognizer(gpu=True, active=32, slots=64).interim_gate()
    busy = _recognizer(gpu=True)
    busy.interims_in_flight = 64  # the default cap on a GPU
    assert not busy.interim_gate()
    assert _count("skipped_load") == skipped + 3


def test_on_the_cpu_an_interim_waits_for_every_final():
    assert _recognizer(gpu=False).interim_gate()
    assert not _recognizer(gpu=False, finals=1).interim_gate()
    assert not _recognizer(gpu=False, encoder_queue=1).interim_gate()
    one = _recognizer(gpu=False)
    one.interims_in_flight = 1  # the default cap on the CPU
    assert not one.interim_gate()


# -- the load generator's numbers ---------------------------------------------------------------------------


def _turn(asked_s: float, v2v: float, *, errors=(), audio_s=2.0, degraded=False) -> dict:
    return {"asked_s": asked_s, "report": [{"stage": "tts", "ms": 20.0, "server_ms": 18.0, "missed": False,
                                            "degraded": degraded}],
            "cancelled": False, "voice_to_voice_ms": v2v, "client_voice_to_voice_ms": v2v + 1,
            "endpoint_wait_ms": 300.0, "orchestration_ms": 1.0, "overhead_ms": 5.0, "missed": False,
            "errors": list(errors), "audio_s": audio_s}


def test_the_summary_leaves_out_warm_up_turns_and_counts_failed_and_degraded_ones():
    options = BenchOptions(address="a", wavs=(), streams=2, duration_s=10, realtime=True, json_path=None,
                           plot_path=None, budget_ms=0, listen=True, ramp_s=5.0)
    result = LoadResult(turns=[_turn(1.0, 9999.0), _turn(6.0, 400.0), _turn(7.0, 500.0, degraded=True),
                               _turn(8.0, 450.0, errors=[{"code": 14}]), _turn(9.0, 420.0, audio_s=0.0)],
                        errors=["AioRpcError: gone"], wall_s=15.0, cpu_s=[1.5, 3.0])
    summary = summarize(options, result)
    assert summary["turns"] == 4 and summary["warmup_turns"] == 1
    assert summary["client_voice_to_voice_ms"]["p50"] == pytest.approx(436.0)  # 9999 (warm-up) left out
    assert summary["failed_turns"] == 3  # an error, no audio, a failed conversation
    assert summary["degraded_turns"] == 1
    assert summary["client"] == {"processes": 2, "cpu_cores": pytest.approx(0.45), "busiest_process_cpu": 0.3}


def test_gpu_energy_is_the_integral_of_power_over_the_window():
    sampler = GpuSampler()
    sampler.samples = [(0.0, [(10.0, 1000.0, 100.0)]), (1.0, [(30.0, 1000.0, 200.0)]),
                       (2.0, [(50.0, 2000.0, 200.0)]), (9.0, [(99.0, 9000.0, 900.0)])]
    window = sampler.window(0.0, 2.0)
    assert window["energy_j"] == pytest.approx(150.0 + 200.0)
    assert window["util_mean_pct"] == pytest.approx(30.0) and window["memory_max_mib"] == 2000.0
    assert sampler.window(5.0, 6.0) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["-n", "0"], "--streams=0 must be >= 1"),
    (["-n", "a,b"], "must be integers"),
    (["--think-s", "3,1"], "MIN,MAX with 0 <= MIN <= MAX"),
    (["--chunk-ms", "5"], "--chunk-ms=5 is outside 10..1000"),
    (["--processes", "0"], "--processes=0 must be >= 1"),
])
def test_bench_options_are_checked_before_anything_connects(argv, message):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "clients.cli", "bench", *argv], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], env={**os.environ, "VOXPIPE_LOG_LEVEL": "ERROR"},
                          check=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr

