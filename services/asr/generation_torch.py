"""The Whisper decoder on the PyTorch backend (the GPU path): every slot's state lives on the device.

Per instance, preallocated at the largest batch bucket: the self-attention cache [slots, capacity, D] and
the cross-attention K/V [slots, H, ...] of each layer, the next input token and the position of each
slot. A step runs :meth:`WhisperDecoder.step` on rows 0..bucket-1 — the cache is written in place, the
greedy pick and the next input token are computed on the device — and reads back per row the token, its
probability, the no-speech probability, the step's log-normaliser and hidden state (phrase boosting reads the
last two) in one copy, so the host knows which sequences finished. With
``cuda_graphs`` each batch bucket's step is one captured graph: a step costs one replay and one small
copy to the host, whatever the number of active streams. Slots are handed out lowest first, so the
active ones stay packed at the front and the bucket stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

from engines.config import bucket_for
from engines.generation import GenerationEngine
from engines.models.whisper_spec import GreedyRule
from engines.torch import TorchEngine
from services.asr.decoding import DecodeResult, SlotState
from services.asr.generation import EncodedUtterance


class TorchWhisperGenerator(GenerationEngine[EncodedUtterance, DecodeResult]):
    """Slots on the device; one (graph-captured) step for every active slot."""

    def __init__(self, engine: TorchEngine, rule: GreedyRule, slots: int) -> None:
        import torch

        self._torch = torch
        self.engine = engine
        self.rule = rule
        self.slots = slots
        module = engine.module
        dims = module.dims
        dev, dtype = engine.torch_device, engine.dtype

        def zeros(*shape: int):
            return torch.zeros(shape, dtype=dtype, device=dev)

        n, d, h, dh, s = dims.n_text_layer, dims.n_state, dims.n_head, dims.head_dim, dims.n_audio_ctx
        self.self_k = [zeros(slots, rule.capacity, d) for _ in range(n)]
        self.self_v = [zeros(slots, rule.capacity, d) for _ in range(n)]
        self.cross_k = [zeros(slots, h, s, dh) for _ in range(n)]  # keys untransposed: the fused kernels' layout
        self.cross_v = [zeros(slots, h, s, dh) for _ in range(n)]
        self.tokens = torch.full((slots,), rule.sot, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(slots, dtype=torch.int64, device=dev)
        self.buckets = engine.serving.batch_buckets
        cuda = dev.type == "cuda"
        self._picks = torch.zeros((slots, 4 + d), dtype=torch.float32, pin_memory=cuda)  # a row per slot: contiguous
        self._state: dict[int, SlotState] = {}

    def describe(self) -> str:
        graphs = "CUDA graphs per bucket " + "/".join(map(str, self.buckets)) if self.engine.graphs else "eager"
        return f"whisper decoder, {self.slots} slots on {self.engine.torch_device}, {self.engine.dtype}, {graphs}"

    def _step_rows(self, rows: int):
        """One step of rows 0..rows-1, all on the device: returns token, prob, no-speech prob, log-normaliser
        and the hidden state as [rows, 4 + D] float32 (token ids < 2^24 are exact in float32)."""
        torch = self._torch
        next_token, token, prob, no_speech, log_norm, hidden = self.engine.module.step(
            self.tokens[:rows], self.positions[:rows], [k[:rows] for k in self.self_k],
            [v[:rows] for v in self.self_v], [k[:rows] for k in self.cross_k], [v[:rows] for v in self.cross_v])
        self.tokens[:rows].copy_(next_token)
        self.positions[:rows].add_(1)
        picks = torch.stack([token.float(), prob.float(), no_speech.float(), log_norm.float()], dim=1)
        return (torch.cat([picks, hidden.float()], dim=1),)

    def warmup(self) -> None:
        """Capture each bucket's step (largest first: smaller graphs reuse its memory pool)."""
        graphs = self.engine.graphs
        with self._torch.inference_mode():
            for rows in sorted(self.buckets or (1,), reverse=True):
                if graphs is not None:
                    graphs.capture(("step", rows), lambda rows=rows: self._step_rows(rows))
                else:
                    with self.engine.stream_context():
                        self._step_rows(rows)
        self.engine.synchronize()

    def prefill(self, batch: Sequence[tuple[int, EncodedUtterance]]) -> None:
        torch = self._torch
        stream = self.engine.stream
        with torch.inference_mode(), self.engine.stream_context():
            for slot, encoded in batch:
                for layer in range(len(self.cross_k)):
                    self.cross_k[layer][slot].copy_(encoded.cross_key[layer].transpose(-1, -2), non_blocking=True)
                    self.cross_v[layer][slot].copy_(encoded.cross_value[layer], non_blocking=True)
                if stream is not None:  # the encoder's memory must outlive this copy on our stream
                    encoded.cross_key.record_stream(stream)
                    encoded.cross_value.record_stream(stream)
                self._state[slot] = SlotState(self.rule)
            index = torch.tensor([slot for slot, _ in batch], dtype=torch.int64).to(self.tokens.device)
            self.tokens.index_fill_(0, index, self.rule.prompt[0])
            self.positions.index_fill_(0, index, 0)

    def release(self, slot: int) -> None:
        self._state.pop(slot, None)

    def step(self, active: Sequence[int]) -> dict[int, DecodeResult]:
        torch = self._torch
        rows = bucket_for(active[-1] + 1, self.buckets) if self.buckets else active[-1] + 1
        graphs = self.engine.graphs
        with torch.inference_mode(), self.engine.stream_context():
            captured = graphs is not None and ("step", rows) in graphs
            (picks,) = graphs.replay(("step", rows)) if captured else self._step_rows(rows)
            self._picks[:rows].copy_(picks, non_blocking=True)
        self.engine.synchronize()
        host = self._picks.numpy()
        finished = {}
        for slot in active:
            state = self._state[slot]
            row = host[slot]
            if state.advance(int(row[0]), float(row[1]), float(row[2]), float(row[3]), row[4:].copy()):
                finished[slot] = state.result()
        return finished
