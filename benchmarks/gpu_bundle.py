"""Everything a GPU machine without a package registry needs to run voxpipe, in parts small enough to send.

The lent H200 machine (Python 3.12, PyTorch, CUDA) has no registry and takes at most 64 MiB per call.
``prepare`` (here) writes one tar of: the model repository's GPU artifacts (PyTorch weights, configs,
tokenizers, catalogues; MiniLM's weights in FP16 for the trip), cp312 wheels of the packages that machine
lacks (piper-tts without its other languages' dictionaries), the benchmark data (the ASR test set, the NLP
held-out utterances, the paused-question set, the spoken title set) and the CPU FP32 reference outputs (``gpu_parity.collect`` on this machine), and
splits it into ``.gpu/p1``, ``.gpu/p2``, ... Each part travels in one call (``carry``), the parts
accumulate in the ignored folder there, and ``install`` (there) joins, checks and unpacks them.

    python benchmarks/gpu_bundle.py prepare                    # here; prints the calls to make
    python3 benchmarks/gpu_bundle.py install --to /tmp/vx     # there; then PYTHONPATH=/tmp/vx/site:.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUNDLE = ROOT / ".gpu"
PART_MIB = 54  # the call limit is 64 MiB including the working tree (~6 MiB, most of it docs/bench)
WHEELS = ("grpcio==1.85.1", "grpcio-health-checking==1.85.1", "grpcio-reflection==1.85.1",
          "opentelemetry-api==1.45.2", "opentelemetry-sdk==1.45.2", "opentelemetry-semantic-conventions==0.66b2",
          "soxr==1.1.0", "soundfile==0.14.0", "cffi==2.0.0", "pycparser==2.23", "rapidfuzz==3.14.6",
          "asyncio-throttle==1.0.2", "piper-tts==1.8.0", "pytest-asyncio==1.3.0", "pysbd==0.3.4", "num2words==0.5.14")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# Model folders and the files of each a CUDA stack reads (the ONNX graphs stay here, except two small ones
# the benchmark times on the GPU machine's CPUs for the GPU-vs-CPU comparison).
MODEL_FILES = {
    "whisper-tiny-en-encoder": ("config.json", "model.safetensors"),
    "whisper-tiny-en-decoder": ("config.json", "model.safetensors", "tokenizer.json"),
    "whisper-tiny-en-scorer": ("config.json",),  # its PyTorch weights are the decoder's
    "silero-vad": ("config.json", "model.onnx"),
    "minilm": ("config.json", "model.safetensors", "tokenizer.json", "catalog.tsv"),
    "recommender": ("config.json", "model.safetensors", "model.onnx", "items.tsv", "vectors.npz"),
    "tts-en_US-joe-medium": ("config.json", "voice.json", "MODEL_CARD"),
    "tts-en_US-joe-medium-encoder": ("config.json", "model.safetensors"),
    "tts-en_US-joe-medium-decoder": ("config.json", "model.safetensors", "model.onnx"),
}
FP16_FOR_TRANSPORT = ("minilm",)  # served in FP16 there; FP32 runs there use these weights upcast


def _models_dir() -> Path:
    import os

    from services.common.settings import cache_root

    return Path(os.environ.get("VOXPIPE_MODELS_DIR", cache_root(os.environ) / "models"))


def _slim_piper(wheel: Path, out: Path) -> None:
    """piper-tts without the dictionaries and diacritisers of other languages (34 MB -> ~3 MB)."""
    drop = ("piper/hebrew/", "piper/tashkeel/model.onnx")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename
            if name.startswith(drop) or (name.startswith("piper/espeak-ng-data/") and name.endswith("_dict")
                                          and not name.endswith("/en_dict")):
                continue
            dst.writestr(item, src.read(item))


def _wheels(stage: Path) -> None:
    target = stage / "wheels"
    target.mkdir(parents=True)
    download = BUNDLE / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "--platform", "any",
                    "-d", str(download), *WHEELS], check=True)
    for wheel in download.glob("*.whl"):
        if wheel.name.startswith("piper_tts-"):
            _slim_piper(wheel, target / wheel.name)
        else:
            shutil.copy(wheel, target / wheel.name)


def _models(stage: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    source = _models_dir()
    for name, files in MODEL_FILES.items():
        folder = stage / "models" / name
        folder.mkdir(parents=True)
        for file in files:
            if not (source / name / file).is_file():
                raise SystemExit(f"{source / name / file} is missing: run `voxpipe build`")
            if name in FP16_FOR_TRANSPORT and file == "model.safetensors":
                state = load_file(str(source / name / file))
                save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()},
                          str(folder / file))
            else:
                shutil.copy(source / name / file, folder / file)


def _data(stage: Path) -> None:
    from benchmarks import gpu_parity
    from benchmarks.make_asr_testset import has_piper_half
    from services.common.settings import cache_root

    data = stage / "data"
    testset = cache_root(os.environ) / "asr-testset"
    if not has_piper_half(testset):  # missing, or made by hand without --piper: not the benchmarks' set
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_asr_testset.py"), "--piper"], check=True)
    shutil.copytree(testset, data / "asr-testset")
    shutil.copy(ROOT / "tests" / "data" / "nlp_heldout.jsonl", data / "nlp_heldout.jsonl")
    paused = cache_root(os.environ) / "paused-questions"  # endpoint_bench.py's (VOXPIPE_PAUSED_SET there)
    if not (paused / "references.json").is_file():
        subprocess.run([sys.executable, "-m", "benchmarks.make_paused_questions"], cwd=ROOT, check=True)
    shutil.copytree(paused, data / "paused-questions")
    titles = cache_root(os.environ) / "title-testset"  # title_bench.py's (--keep-sets, VOXPIPE_CACHE_DIR there)
    if not (titles / "references.json").is_file():
        subprocess.run([sys.executable, "-m", "benchmarks.make_title_testset"], cwd=ROOT, check=True)
    shutil.copytree(titles, data / "title-testset")
    print("computing the CPU FP32 reference outputs ...", flush=True)
    reference = gpu_parity.collect(_models_dir(), "cpu", data)
    (data / "cpu_reference.json").write_text(json.dumps(reference))


def prepare(part_mib: int) -> None:
    """Build the bundle and its parts under .gpu/ (see the module docstring)."""
    stage = BUNDLE / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    for old in BUNDLE.glob("p[0-9]*"):
        shutil.rmtree(old)
    stage.mkdir(parents=True)
    _wheels(stage)
    _models(stage)
    _data(stage)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        # Wheels first: the first part alone already holds them (``install --partial`` for a smoke test).
        for top in ("wheels", "data", "models"):
            tar.add(stage / top, arcname=top)
    blob = buffer.getvalue()
    size = part_mib * 1024 * 1024
    parts = [blob[i:i + size] for i in range(0, len(blob), size)]
    for i, part in enumerate(parts, 1):
        (BUNDLE / f"p{i}").mkdir()
        (BUNDLE / f"p{i}" / f"bundle.tar.{i:03d}").write_bytes(part)
    manifest = {"parts": len(parts), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (BUNDLE / "p1" / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(stage)
    smoke = BUNDLE / "smoke"  # the Whisper configs, for gpu_smoke.py's random-weight models
    shutil.rmtree(smoke, ignore_errors=True)
    for name in ("whisper-tiny-en-encoder", "whisper-tiny-en-decoder"):
        (smoke / name).mkdir(parents=True)
        shutil.copy(_models_dir() / name / "config.json", smoke / name / "config.json")
    print(f"{len(blob) / 2**20:.1f} MiB in {len(parts)} parts: " + ", ".join(f".gpu/p{i}" for i in range(1, len(parts) + 1)))
    print("send each part in its own call while the machine is warm: run(command='ls .gpu', carry=['.gpu/pN'])")


def install(to: Path, *, partial: bool = False) -> None:
    """Join the carried parts, check them, unpack models and data, and unzip the wheels into site/.

    ``partial``: unpack whatever the parts present so far hold (the first one: the wheels), unchecked.
    """
    manifest = json.loads((BUNDLE / "p1" / "manifest.json").read_text())
    chunks = sorted(BUNDLE.glob("p*/bundle.tar.*"), key=lambda p: p.name)
    if len(chunks) != manifest["parts"] and not partial:
        raise SystemExit(f"have {len(chunks)} of {manifest['parts']} parts ({[c.name for c in chunks]})")
    blob = b"".join(c.read_bytes() for c in chunks)
    if not partial and hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        raise SystemExit("the joined bundle does not match its checksum; send the parts again")
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tar:
        try:
            for member in tar:
                tar.extract(member, to, filter="data")
        except (tarfile.ReadError, EOFError):
            if not partial:
                raise
    site = to / "site"
    for wheel in sorted((to / "wheels").glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    print(f"installed into {to}: models/, data/, site/ ({len(list((to / 'wheels').glob('*.whl')))} wheels)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: build .gpu/p1, p2, ...")
    p.add_argument("--part-mib", type=int, default=PART_MIB)
    p = sub.add_parser("install", help="there: join the parts and unpack them")
    p.add_argument("--to", type=Path, default=Path("/tmp/vx"))
    p.add_argument("--partial", action="store_true", help="unpack what the parts so far hold (the wheels)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.part_mib)
    else:
        install(args.to, partial=args.partial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
