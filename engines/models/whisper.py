"""Whisper in PyTorch: the encoder (with every decoder layer's cross-attention K/V) and a decoder step.

The module holds the model and the greedy choice of the next token; serving concerns (batching, slots,
devices, precision, CUDA graphs) live in the engine layer. Two forms of the decoder step share the layers:

* :meth:`WhisperDecoder.forward` — the graph exported to ONNX for the CPU: a padded self-attention cache
  of dynamic length goes in, only the new token's K/V comes out, and the caller keeps the cache;
* :meth:`WhisperDecoder.step` — the GPU form: the self-attention cache and the cross K/V are
  preallocated per slot and written in place, so the step has static shapes per batch bucket and is
  captured once in a CUDA graph, and the next input token is computed on the device.

Both end in :meth:`WhisperDecoder.pick`, the one owner of the greedy rule (as CTranslate2 applies it for
faster-whisper with an English-only model, ``without_timestamps``, beam 1, temperature 0): the model's
``suppress_ids`` are masked at every step and ``suppress_ids_begin`` as well at the first generated token;
the token is the argmax, its probability the softmax of the masked logits; the no-speech probability is
read at the ``<|startoftranscript|>`` step from the unmasked logits; while the prompt
(``<|startoftranscript|><|notimestamps|>``) is being fed, the next input is the prompt's next token.
A step also returns what the projection read (the final layer norm's output, ``hidden``) and the masked
logits' log-sum-exp (``log_norm``): with the token embedding, the host computes the log-probability of any
token at that step without the decoder (phrase boosting rules candidates out with it).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from engines.models.whisper_spec import GreedyRule, WhisperDims

# The fused attention kernels the scorer may use: those that need no per-shape set-up (see WhisperDecoder.score).
_SCORER_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

_NEG = -1e9  # additive mask: exp underflows to exactly 0 in float32 (and fp16 after the max is subtracted)


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, n_head, d // n_head).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def _attention(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention on heads [B, H, T, D/H]; ``mask`` is additive, or boolean (True: attend), or None.

    Running, this is PyTorch's fused kernel (flash or memory-efficient attention: no [T, S] score matrix in
    memory); exported to ONNX, the plain matmul-softmax-matmul the CPU graphs have always had.
    """
    if not torch.onnx.is_in_onnx_export():
        return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(qh.shape[-1]))
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), vh)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_head: int,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention on [B, T, D] tensors split into ``n_head`` heads (see :func:`_attention` for ``mask``)."""
    return _merge(_attention(_heads(q, n_head), _heads(k, n_head), _heads(v, n_head), mask))


def _attend_heads(q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor, n_head: int) -> torch.Tensor:
    """Attention of [B, T, D] queries over keys [B, H, D/H, S] (transposed) and values [B, H, S, D/H]."""
    qh = _heads(q, n_head)
    scores = torch.matmul(qh, keys_t) * (1.0 / math.sqrt(qh.shape[-1]))
    return _merge(torch.matmul(torch.softmax(scores, dim=-1), values))


class _Mlp(nn.Module):
    def __init__(self, n_state: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(n_state)
        self.fc1 = nn.Linear(n_state, 4 * n_state)
        self.fc2 = nn.Linear(4 * n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.ln(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_state
        self.n_head = dims.n_head
        self.ln = nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.mlp = _Mlp(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        x = x + self.out(_attend(self.q(h), self.k(h), self.v(h), self.n_head))
        return x + self.mlp(x)


class WhisperEncoder(nn.Module):
    """mel [B, n_mels, F] -> every decoder layer's cross K/V, split into heads: keys [B, L, H, D/H, S]
    (transposed) and values [B, L, H, S, D/H], S = F/2. F is 2*n_audio_ctx (Whisper's 30 s window) or fewer
    frames: a shorter window, with the first S positional embeddings (``services/asr/features.py``)."""

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_state
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("pos", torch.zeros(dims.n_audio_ctx, d))
        self.layers = nn.ModuleList(_EncoderLayer(dims) for _ in range(dims.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)
        # The decoder's cross-attention K/V projections, applied once per utterance to the encoder output.
        self.cross_k = nn.ModuleList(nn.Linear(d, d) for _ in range(dims.n_text_layer))
        self.cross_v = nn.ModuleList(nn.Linear(d, d) for _ in range(dims.n_text_layer))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.pos[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        hidden = self.ln_post(x)
        b, s, d = hidden.shape
        h = self.dims.n_head
        keys = torch.stack([p(hidden) for p in self.cross_k], dim=1)  # [B, L, S, D]
        values = torch.stack([p(hidden) for p in self.cross_v], dim=1)
        keys = keys.reshape(b, -1, s, h, d // h).permute(0, 1, 3, 4, 2)  # [B, L, H, D/H, S]
        values = values.reshape(b, -1, s, h, d // h).permute(0, 1, 3, 2, 4)  # [B, L, H, S, D/H]
        return keys.contiguous(), values.contiguous()


class _DecoderLayer(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_state
        self.n_head = dims.n_head
        self.ln_self = nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.ln_cross = nn.LayerNorm(d)
        self.cross_q = nn.Linear(d, d)
        self.cross_out = nn.Linear(d, d)
        self.mlp = _Mlp(d)

    def cross_and_mlp(self, x: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor, *,
                      keys_transposed: bool = True) -> torch.Tensor:
        """Cross-attention over keys [B, H, D/H, S] (transposed: the ONNX layout) or [B, H, S, D/H], then the MLP."""
        q = self.cross_q(self.ln_cross(x))
        if keys_transposed:
            attended = _attend_heads(q, cross_k, cross_v, self.n_head)
        else:
            attended = _merge(_attention(_heads(q, self.n_head), cross_k, cross_v))
        x = x + self.cross_out(attended)
        return x + self.mlp(x)


class WhisperDecoder(nn.Module):
    """One greedy decoder step; see the module docstring for its two forms."""

    def __init__(self, dims: WhisperDims, rule: GreedyRule) -> None:
        super().__init__()
        d = dims.n_state
        self.dims = dims
        self.rule = rule
        self.register_buffer("embedding", torch.zeros(dims.n_vocab, d))  # tied with the output projection
        self.register_buffer("pos", torch.zeros(dims.n_text_ctx, d))
        self.layers = nn.ModuleList(_DecoderLayer(dims) for _ in range(dims.n_text_layer))
        self.ln = nn.LayerNorm(d)
        always = torch.zeros(dims.n_vocab, dtype=torch.bool)
        always[list(rule.suppress_ids)] = True
        first = always.clone()
        first[list(rule.suppress_ids_begin)] = True
        # Not part of the weights: rebuilt from the rule, kept out of the state dict.
        self.register_buffer("mask_always", always, persistent=False)
        self.register_buffer("mask_first", first, persistent=False)
        self.register_buffer("prompt", torch.tensor(rule.prompt, dtype=torch.int64), persistent=False)
        # The same masks as token ids (``score`` takes their probability out of the softmax's sum).
        self.register_buffer("ids_always", torch.nonzero(always).view(-1), persistent=False)
        self.register_buffer("ids_first_only", torch.nonzero(first & ~always).view(-1), persistent=False)

    # -- the greedy rule ---------------------------------------------------------------------------

    def on_precision(self) -> None:
        """Called by the engine once the module is on its device and dtype: keep a float32 copy of the
        output projection, so an FP16 decoder computes its logits in float32 without a cast per step."""
        self._projection = self.embedding.float().t().contiguous()

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last position of ``x`` [B, T, D] after the final layer norm, in float32 ([B, D], what the
        projection reads), and its float32 logits [B, V] (the projection in float32, so an FP16 decoder picks
        the same token as FP32 on near ties)."""
        projection = getattr(self, "_projection", None)
        if projection is None:
            projection = self.embedding.float().t()
        hidden = self.ln(x)[:, -1].float()
        return hidden, torch.matmul(hidden, projection)

    def pick(self, logits: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The greedy choice after feeding the token at ``positions`` [B].

        Returns:
            next_token [B] (what to feed next: the prompt's next token, or the picked token),
            token [B] (the picked token; meaningful once the prompt is consumed), prob [B] (its
            probability), no_speech_prob [B] (meaningful at position 0), log_norm [B] (the log-sum-exp of
            the masked logits: any allowed token's log-probability is its logit minus this).
        """
        n_prompt = self.prompt.shape[0]
        first = (positions == n_prompt - 1).unsqueeze(1)
        mask = self.mask_always.unsqueeze(0) | (first & self.mask_first.unsqueeze(0))  # mask_first covers mask_always
        masked = logits.masked_fill(mask, float("-inf"))
        token = torch.argmax(masked, dim=-1)
        prob = torch.softmax(masked, dim=-1).gather(1, token.unsqueeze(1)).squeeze(1)
        # log_norm without another pass over the vocabulary (a logsumexp cost ~1 ms a step on the CPU): the picked
        # token's logit minus its log-probability (the argmax's probability is at least 1/V, so its log is exact).
        log_norm = masked.gather(1, token.unsqueeze(1)).squeeze(1) - torch.log(prob)
        no_speech = torch.softmax(logits, dim=-1)[:, self.rule.no_speech]
        following = positions + 1
        from_prompt = self.prompt[torch.clamp(following, max=n_prompt - 1)]
        next_token = torch.where(following < n_prompt, from_prompt, token)
        return next_token, token, prob, no_speech, log_norm

    # -- the ONNX form: dynamic cache owned by the caller ------------------------------------------

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, past_key: torch.Tensor,
                past_value: torch.Tensor, *cross: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """tokens [B,1] int64, positions [B] int64, past_* [B,L,P,D]; ``cross`` is key, value per layer:
        [B,H,D/H,S] and [B,H,S,D/H]. Rows may sit at different positions: cache slots at or beyond a
        row's position are padding and masked out.

        Returns next_token, token, prob, no_speech_prob, log_norm ([B] each, see :meth:`pick`), hidden
        [B,D] (see :meth:`head`) and the new token's K/V per layer, new_key and new_value [B,L,1,D].
        """
        x = self.embedding[tokens] + self.pos[positions].unsqueeze(1)
        past_len = past_key.shape[2]
        slots = torch.arange(past_len, device=tokens.device).unsqueeze(0)
        pad = (slots >= positions.unsqueeze(1)).to(x.dtype) * _NEG
        new = positions.unsqueeze(1).to(x.dtype) * 0.0  # [B, 1] zeros, also when the cache is empty
        bias = torch.cat([pad, new], dim=1)[:, None, None, :]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            h = layer.ln_self(x)
            k, v = layer.k(h), layer.v(h)
            keys = torch.cat([past_key[:, i], k], dim=1)
            values = torch.cat([past_value[:, i], v], dim=1)
            x = x + layer.out(_attend(layer.q(h), keys, values, layer.n_head, bias))  # additive: exported
            x = layer.cross_and_mlp(x, cross[2 * i], cross[2 * i + 1])
            new_keys.append(k)
            new_values.append(v)
        hidden, logits = self.head(x)
        return (*self.pick(logits, positions), hidden, torch.stack(new_keys, dim=1), torch.stack(new_values, dim=1))

    # -- forced decoding: the log-probability of given transcripts ---------------------------------

    def score(self, tokens: torch.Tensor, score_at: torch.Tensor, *cross: torch.Tensor) -> torch.Tensor:
        """How likely the decoder finds given token sequences, all asked-for positions in one pass (teacher forcing).

        tokens [B, C, T] int64: C candidate sequences per utterance (prompt, text tokens, ``<|endoftext|>``;
        shorter ones padded with any token); score_at [B, N] int64: the positions to score in each utterance, as
        flat indices into its [C, T] tokens (c * T + j, j >= 1); the caller asks only for what differs between
        candidates (the tokens before a candidate's first difference score alike). ``cross`` as in
        :meth:`forward`, one utterance per row, shared by its C candidates.

        Returns logprob [B, N]: the log-probability of each asked-for token after the tokens before it in its
        row, under the greedy rule's masks (the suppressed tokens are excluded from the softmax, and at the
        first text position the begin-suppressed ones too, as :meth:`pick` does). Every position runs through
        the layers, but only the N asked-for ones through the vocabulary projection, which on a CPU is most of
        the cost (51,864 logits each).
        """
        b, c, t = tokens.shape
        d = self.dims.n_state
        x = self.embedding[tokens.reshape(b * c, t)] + self.pos[:t]
        steps = torch.arange(t, device=tokens.device)
        causal = (steps.unsqueeze(0) > steps.unsqueeze(1)).to(x.dtype) * _NEG  # [T, T]: no peeking ahead
        # Not cuDNN's attention: every new [C, T] shape builds a cuDNN graph first (50-80 ms on the H200, 840 ms
        # for the first), and the scorer's shapes change with every final.
        with sdpa_kernel(_SCORER_ATTENTION):
            for i, layer in enumerate(self.layers):
                h = layer.ln_self(x)
                x = x + layer.out(_attend(layer.q(h), layer.k(h), layer.v(h), layer.n_head, causal))
                # The C candidates of an utterance attend to its cross K/V as one [C*T]-query batch: no copies.
                x = layer.cross_and_mlp(x.reshape(b, c * t, d), cross[2 * i],
                                        cross[2 * i + 1]).reshape(b * c, t, d)
        before = (score_at - 1).unsqueeze(2).expand(-1, -1, d)  # each token is predicted by the one before
        hidden = torch.gather(self.ln(x).reshape(b, c * t, d), 1, before)  # [B, N, D]
        projection = getattr(self, "_projection", None)
        if projection is None:
            projection = self.embedding.float().t()
        logits = torch.matmul(hidden.float(), projection)  # [B, N, V]
        # log_softmax over the tokens the greedy rule allows, without a masked copy of the logits (which cost
        # as much again as the projection on a CPU): over the whole vocabulary, then renormalised without the
        # (small) probability of the masked tokens.
        logprobs = torch.log_softmax(logits, dim=-1)
        at_first = torch.remainder(score_at, t) == self.prompt.shape[0]  # [B, N]
        masked = torch.exp(torch.index_select(logprobs, 2, self.ids_always)).sum(-1)
        masked = masked + at_first.to(masked.dtype) * torch.exp(
            torch.index_select(logprobs, 2, self.ids_first_only)).sum(-1)
        targets = torch.gather(tokens.reshape(b, c * t), 1, score_at)
        logprob = logprobs.gather(2, targets.unsqueeze(2)).squeeze(2) - torch.log1p(-torch.clamp(masked, max=1.0 - 1e-6))
        suppressed = self.mask_always[targets] | (at_first & self.mask_first[targets])
        return logprob.masked_fill(suppressed, float("-inf"))

    # -- the GPU form: static per-slot buffers, written in place -----------------------------------

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, self_k: list[torch.Tensor],
             self_v: list[torch.Tensor], cross_k: list[torch.Tensor], cross_v: list[torch.Tensor]
             ) -> tuple[torch.Tensor, ...]:
        """One step for rows 0..B-1 of the slot buffers. tokens, positions [B]; per layer ``self_k``,
        ``self_v`` [B, C, D] (C = capacity), ``cross_k`` and ``cross_v`` [B, H, S, D/H] (the layout the fused
        attention kernels read; the encoder's keys are transposed into it once, when a slot is filled).

        The new token's K/V are written into ``self_k``/``self_v`` at each row's position; rows attend
        to cache entries 0..position. Returns :meth:`pick`'s five tensors and the hidden state [B, D] (see
        :meth:`head`). Static shapes: no host sync.
        """
        capacity = self_k[0].shape[1]
        where = torch.clamp(positions, max=capacity - 1)  # rows past their end (idle slots) stay in bounds
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        x = (self.embedding[tokens] + self.pos[where]).unsqueeze(1)
        visible = torch.arange(capacity, device=tokens.device).unsqueeze(0) <= where.unsqueeze(1)
        visible = visible[:, None, None, :]
        for i, layer in enumerate(self.layers):
            h = layer.ln_self(x)
            self_k[i][rows, where] = layer.k(h)[:, 0]
            self_v[i][rows, where] = layer.v(h)[:, 0]
            x = x + layer.out(_attend(layer.q(h), self_k[i], self_v[i], layer.n_head, visible))
            x = layer.cross_and_mlp(x, cross_k[i], cross_v[i], keys_transposed=False)
        hidden, logits = self.head(x)
        return (*self.pick(logits, positions), hidden)


class WhisperScorer(WhisperDecoder):
    """The decoder's weights served as :meth:`WhisperDecoder.score` (the ``whisper-tiny-en-scorer`` model):
    phrase boosting rescores candidate transcripts with it, all tokens in one call."""

    def forward(self, tokens: torch.Tensor, score_at: torch.Tensor,  # type: ignore[override]
                *cross: torch.Tensor) -> torch.Tensor:
        return self.score(tokens, score_at, *cross)
