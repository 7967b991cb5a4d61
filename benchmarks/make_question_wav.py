"""Make ``clients/data/question.wav``: the README demo's spoken question, in the Piper voice.

16 kHz mono LINEAR16, synthesised by our TTS stage (noise scales 0, so the file is reproducible), with
leading and trailing silence so the ASR's VAD sees a clean start and end of the utterance.

    python benchmarks/make_question_wav.py [--out clients/data/question.wav]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from engines.build import BuildContext, build_stage
from services.common import StageSettings
from services.common.settings import cache_root
from services.tts import create_stage

QUESTION = "Can you recommend a comedy from the nineties?"
RATE_HZ = 16_000


@dataclass(frozen=True, kw_only=True)
class QuestionOptions:
    out: Path
    text: str
    lead_silence_ms: int
    tail_silence_ms: int


async def synthesize(text: str, models_dir: Path, rate_hz: int) -> np.ndarray:
    """``text`` as int16 samples at ``rate_hz`` through the real TTS stage (noise off)."""
    stage = create_stage(StageSettings(name="tts", models_dir=models_dir,
                                       options={"noise_scale": 0.0, "noise_w_scale": 0.0}))
    await stage.start()
    try:
        request = stage.synthesizer.validate(text, sample_rate_hz=rate_hz)
        parts = [s.pcm async for s in stage.synthesizer.stream(request)]
    finally:
        await stage.stop()
    return np.concatenate(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("clients/data/question.wav"))
    parser.add_argument("--text", default=QUESTION)
    parser.add_argument("--lead-silence-ms", type=int, default=300)
    parser.add_argument("--tail-silence-ms", type=int, default=800)
    args = parser.parse_args()
    options = QuestionOptions(out=args.out, text=args.text, lead_silence_ms=args.lead_silence_ms,
                              tail_silence_ms=args.tail_silence_ms)
    models_dir = Path(os.environ.get("VOXPIPE_MODELS_DIR", cache_root(os.environ) / "models"))
    build_stage("tts", BuildContext(models_dir=models_dir, downloads_dir=cache_root(os.environ) / "downloads"))
    speech = asyncio.run(synthesize(options.text, models_dir, RATE_HZ))
    lead = np.zeros(RATE_HZ * options.lead_silence_ms // 1000, dtype=np.int16)
    tail = np.zeros(RATE_HZ * options.tail_silence_ms // 1000, dtype=np.int16)
    audio = np.concatenate([lead, speech, tail])
    options.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(options.out, audio, RATE_HZ, subtype="PCM_16")
    print(f"wrote {options.out}: {audio.size / RATE_HZ:.2f} s at {RATE_HZ} Hz, {options.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
