"""Piper's VITS voice in PyTorch (inference only), split where the service splits it.

* :class:`VitsEncoder` — phoneme ids to latents: the text encoder (a transformer with windowed relative
  attention), the stochastic duration predictor run in reverse (its flows, including a rational-quadratic
  spline), the durations and the alignment, and the normalising flow in reverse. Its shapes depend on the
  predicted durations, so it runs eagerly. Outputs ``z`` [B, 192, F] (masked), ``durations`` [B, 1, T]
  (frames per phoneme id) and ``output_lengths`` [B] (samples: frames times the hop).
* :class:`VitsDecoder` — latents to audio: the HiFi-GAN generator, a conv stack with static shapes per
  (batch, frames) bucket, captured in CUDA graphs by the engine. ``output`` is [B, 1, 1, F * hop].

Parameter names follow the VITS/Piper training code, so the weights of Piper's ONNX export load by name
(the build maps the few the exporter renamed). Noise is drawn with ``torch.randn``: with the noise scales
at 0 the voice is deterministic and matches the ONNX graph (checked by the build and the tests).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

LRELU_SLOPE = 0.1


@dataclass(frozen=True, kw_only=True)
class VitsHyper:
    """The voice's hyper-parameters (read from its weights by the build)."""

    n_vocab: int
    hidden: int = 192
    filter: int = 768
    n_heads: int = 2
    n_layers: int = 6
    ffn_kernel: int = 3
    window: int = 4
    dp_filter: int = 192
    dp_kernel: int = 3
    dp_flows: tuple[int, ...] = (7, 5, 3)  # ConvFlow indexes used in reverse, in order (Flips between them)
    num_bins: int = 10
    tail_bound: float = 5.0
    flow_ids: tuple[int, ...] = (0, 2, 4, 6)
    flow_kernel: int = 5
    flow_layers: int = 4
    upsample_initial: int = 256
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    upsample_kernels: tuple[int, ...] = (16, 16, 8)
    resblock_kernels: tuple[int, ...] = (3, 5, 7)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VitsHyper:
        fixed = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                 for k, v in raw.items()}
        return cls(**fixed)


def _sequence_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    return torch.arange(max_length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class _LayerNorm(nn.Module):
    """Layer norm over the channel axis of [B, C, T] (VITS's ``modules.LayerNorm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, 1e-5)
        return x.transpose(1, -1)


# -- text encoder ------------------------------------------------------------------------------------


class _RelativeAttention(nn.Module):
    """Multi-head self-attention with relative position embeddings within ``window`` (shared by heads)."""

    def __init__(self, channels: int, n_heads: int, window: int) -> None:
        super().__init__()
        self.n_heads, self.window = n_heads, window
        self.k_channels = channels // n_heads
        self.conv_q, self.conv_k, self.conv_v, self.conv_o = (nn.Conv1d(channels, channels, 1) for _ in range(4))
        self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k_channels))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k_channels))

    def _relative_embeddings(self, emb: torch.Tensor, length: int) -> torch.Tensor:
        pad = max(length - (self.window + 1), 0)
        start = max((self.window + 1) - length, 0)
        if pad > 0:
            emb = F.pad(emb, (0, 0, pad, pad))
        return emb[:, start:start + 2 * length - 1]

    @staticmethod
    def _relative_to_absolute(x: torch.Tensor) -> torch.Tensor:
        """[B, H, L, 2L-1] -> [B, H, L, L]."""
        b, h, length, _ = x.shape
        x = F.pad(x, (0, 1)).reshape(b, h, length * 2 * length)
        x = F.pad(x, (0, length - 1))
        return x.reshape(b, h, length + 1, 2 * length - 1)[:, :, :length, length - 1:]

    @staticmethod
    def _absolute_to_relative(x: torch.Tensor) -> torch.Tensor:
        """[B, H, L, L] -> [B, H, L, 2L-1]."""
        b, h, length, _ = x.shape
        x = F.pad(x, (0, length - 1)).reshape(b, h, length * length + length * (length - 1))
        x = F.pad(x, (length, 0))
        return x.reshape(b, h, length, 2 * length)[:, :, :, 1:]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, d, t = x.shape
        q, k, v = self.conv_q(x), self.conv_k(x), self.conv_v(x)
        q = q.reshape(b, self.n_heads, self.k_channels, t).transpose(2, 3) / math.sqrt(self.k_channels)
        k = k.reshape(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        v = v.reshape(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        scores = torch.matmul(q, k.transpose(-2, -1))
        rel_k = self._relative_embeddings(self.emb_rel_k, t)
        scores = scores + self._relative_to_absolute(torch.matmul(q, rel_k.unsqueeze(0).transpose(-2, -1)))
        scores = scores.masked_fill(~mask, -1e4)
        p = torch.softmax(scores, dim=-1)
        out = torch.matmul(p, v)
        rel_v = self._relative_embeddings(self.emb_rel_v, t)
        out = out + torch.matmul(self._absolute_to_relative(p), rel_v.unsqueeze(0))
        return self.conv_o(out.transpose(2, 3).reshape(b, d, t))


class _Ffn(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel: int) -> None:
        super().__init__()
        self.pad = ((kernel - 1) // 2, kernel // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x * x_mask, self.pad)))
        return self.conv_2(F.pad(x * x_mask, self.pad)) * x_mask


class _Encoder(nn.Module):
    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(_RelativeAttention(h.hidden, h.n_heads, h.window) for _ in range(h.n_layers))
        self.norm_layers_1 = nn.ModuleList(_LayerNorm(h.hidden) for _ in range(h.n_layers))
        self.ffn_layers = nn.ModuleList(_Ffn(h.hidden, h.filter, h.ffn_kernel) for _ in range(h.n_layers))
        self.norm_layers_2 = nn.ModuleList(_LayerNorm(h.hidden) for _ in range(h.n_layers))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = x_mask.unsqueeze(2) & x_mask.unsqueeze(-1)  # [B, 1, T, T]
        mask = x_mask.to(x.dtype)
        x = x * mask
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers,
                                           self.norm_layers_2, strict=True):
            x = norm1(x + attn(x, attn_mask))
            x = norm2(x + ffn(x, mask))
        return x * mask


class _TextEncoder(nn.Module):
    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.hidden = h.hidden
        self.emb = nn.Embedding(h.n_vocab, h.hidden)
        self.encoder = _Encoder(h)
        self.proj = nn.Conv1d(h.hidden, 2 * h.hidden, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor):
        x = (self.emb(ids) * math.sqrt(self.hidden)).transpose(1, -1)
        x_mask = _sequence_mask(lengths, ids.shape[1]).unsqueeze(1)
        x = self.encoder(x, x_mask)
        stats = self.proj(x) * x_mask.to(x.dtype)
        m, logs = torch.split(stats, self.hidden, dim=1)
        return x, m, logs, x_mask


# -- stochastic duration predictor (reverse) ---------------------------------------------------------


class _DDSConv(nn.Module):
    """Dilated depth-separable convolutions (dilations kernel**i)."""

    def __init__(self, channels: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, groups=channels, dilation=kernel ** i,
                      padding=(kernel * kernel ** i - kernel ** i) // 2) for i in range(n_layers))
        self.convs_1x1 = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(n_layers))
        self.norms_1 = nn.ModuleList(_LayerNorm(channels) for _ in range(n_layers))
        self.norms_2 = nn.ModuleList(_LayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            x = x + g
        for sep, one, n1, n2 in zip(self.convs_sep, self.convs_1x1, self.norms_1, self.norms_2, strict=True):
            y = F.gelu(n1(sep(x * x_mask)))
            y = F.gelu(n2(one(y)))
            x = x + y
        return x * x_mask


def _spline_inverse(inputs: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor,
                    tail_bound: float, min_bin: float = 1e-3, min_derivative: float = 1e-3) -> torch.Tensor:
    """Inverse of a monotonic rational-quadratic spline on [-B, B], identity outside (linear tails).

    ``widths``/``heights`` are unnormalised [..., K], ``derivatives`` [..., K-1] (the boundary ones are
    fixed so the spline meets the identity tails). Computed for every element, then selected, so there
    are no data-dependent shapes.
    """
    num_bins = widths.shape[-1]
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    x = inputs.clamp(-tail_bound, tail_bound)
    constant = math.log(math.exp(1 - min_derivative) - 1)
    derivatives = min_derivative + F.softplus(F.pad(derivatives, (1, 1), value=constant))

    def knots(unnormalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bins = min_bin + (1 - min_bin * num_bins) * torch.softmax(unnormalised, dim=-1)
        cum = F.pad(torch.cumsum(bins, dim=-1), (1, 0))
        cum = 2 * tail_bound * cum - tail_bound
        cum = torch.cat([torch.full_like(cum[..., :1], -tail_bound), cum[..., 1:-1],
                         torch.full_like(cum[..., :1], tail_bound)], dim=-1)
        return cum, cum[..., 1:] - cum[..., :-1]

    cumwidths, widths = knots(widths)
    cumheights, heights = knots(heights)
    locations = torch.cat([cumheights[..., :-1], cumheights[..., -1:] + 1e-6], dim=-1)
    index = (torch.sum(x.unsqueeze(-1) >= locations, dim=-1) - 1).clamp(0, num_bins - 1).unsqueeze(-1)

    def at(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, index).squeeze(-1)

    in_cumwidths, in_widths, in_cumheights, in_heights = at(cumwidths), at(widths), at(cumheights), at(heights)
    delta = heights / widths
    in_delta, in_d0, in_d1 = at(delta), at(derivatives), at(derivatives[..., 1:])
    dy = x - in_cumheights
    a = dy * (in_d0 + in_d1 - 2 * in_delta) + in_heights * (in_delta - in_d0)
    b = in_heights * in_d0 - dy * (in_d0 + in_d1 - 2 * in_delta)
    c = -in_delta * dy
    discriminant = (b.pow(2) - 4 * a * c).clamp(min=0)
    root = (2 * c) / (-b - torch.sqrt(discriminant))
    return torch.where(inside, root * in_widths + in_cumwidths, inputs)


class _ConvFlow(nn.Module):
    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.filter, self.num_bins, self.tail_bound = h.dp_filter, h.num_bins, h.tail_bound
        self.pre = nn.Conv1d(1, h.dp_filter, 1)
        self.convs = _DDSConv(h.dp_filter, h.dp_kernel, 3)
        self.proj = nn.Conv1d(h.dp_filter, 3 * h.num_bins - 1, 1)

    def reverse(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[:, :1], x[:, 1:]
        h = self.proj(self.convs(self.pre(x0), x_mask, g=g)) * x_mask
        b, _, t = x0.shape
        h = h.reshape(b, 1, -1, t).permute(0, 1, 3, 2)  # [B, 1, T, 3K-1]
        k = self.num_bins
        scale = math.sqrt(self.filter)
        x1 = _spline_inverse(x1, h[..., :k] / scale, h[..., k:2 * k] / scale, h[..., 2 * k:], self.tail_bound)
        return torch.cat([x0, x1], dim=1) * x_mask


class _ElementwiseAffine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(2, 1))
        self.exp_neg_logs = nn.Parameter(torch.ones(2, 1))  # exp(-logs): what Piper's export keeps

    def reverse(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        return (x - self.m) * self.exp_neg_logs * x_mask


class _DurationPredictor(nn.Module):
    """VITS's stochastic duration predictor, inference direction only: noise -> log durations."""

    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.order = h.dp_flows
        self.pre = nn.Conv1d(h.hidden, h.dp_filter, 1)
        self.convs = _DDSConv(h.dp_filter, h.dp_kernel, 3)
        self.proj = nn.Conv1d(h.dp_filter, h.dp_filter, 1)
        self.flows = nn.ModuleDict({"0": _ElementwiseAffine(), **{str(i): _ConvFlow(h) for i in h.dp_flows}})

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, noise_scale: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.convs(self.pre(x), x_mask)) * x_mask
        z = torch.randn(x.shape[0], 2, x.shape[2], device=x.device, dtype=x.dtype) * noise_scale
        for i, index in enumerate(self.order):
            if i:
                z = torch.flip(z, [1])
            z = self.flows[str(index)].reverse(z, x_mask, x)
        z = torch.flip(z, [1])
        z = self.flows["0"].reverse(z, x_mask)
        return z[:, :1]


# -- normalising flow (reverse) ----------------------------------------------------------------------


class _WaveNet(nn.Module):
    def __init__(self, hidden: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden, kernel, padding=(kernel - 1) // 2)
                                       for _ in range(n_layers))
        self.res_skip_layers = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1)
                                             for i in range(n_layers))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        output = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (inp, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a = inp(x)
            acts = res_skip(torch.tanh(a[:, :self.hidden]) * torch.sigmoid(a[:, self.hidden:]))
            if i < last:
                x = (x + acts[:, :self.hidden]) * x_mask
                output = output + acts[:, self.hidden:]
            else:
                output = output + acts
        return output * x_mask


class _CouplingLayer(nn.Module):
    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        half = h.hidden // 2
        self.pre = nn.Conv1d(half, h.hidden, 1)
        self.enc = _WaveNet(h.hidden, h.flow_kernel, h.flow_layers)
        self.post = nn.Conv1d(h.hidden, half, 1)

    def reverse(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        x0, x1 = x[:, :half], x[:, half:]
        m = self.post(self.enc(self.pre(x0) * x_mask, x_mask)) * x_mask  # mean only: no log-scale
        return torch.cat([x0, (x1 - m) * x_mask], dim=1)


class _Flow(nn.Module):
    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.order = tuple(reversed(h.flow_ids))
        self.flows = nn.ModuleDict({str(i): _CouplingLayer(h) for i in h.flow_ids})

    def reverse(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        for index in self.order:  # each coupling layer follows a channel flip in the forward direction
            x = self.flows[str(index)].reverse(torch.flip(x, [1]), x_mask)
        return x


class VitsEncoder(nn.Module):
    """(input [B,T] int64, input_lengths [B] int64, scales [3] = noise, length, noise_w) ->
    z [B, 192, F], durations [B, 1, T], output_lengths [B] (samples)."""

    capturable = False  # forward syncs with the host between its phases (see durations / latents)

    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.hop_length = h.hop_length
        self.enc_p = _TextEncoder(h)
        self.dp = _DurationPredictor(h)
        self.flow = _Flow(h)

    def durations(self, ids: torch.Tensor, lengths: torch.Tensor, scales: torch.Tensor):
        """Phase 1 (static shapes per batch and phoneme count): the text encoder and the duration predictor.

        Returns the prior's mean and log-scale [B, 192, T], the phoneme mask [B, 1, T] and the frames per
        phoneme ``w_ceil`` [B, 1, T]. Padded phonemes get no frames.
        """
        scales = scales.to(self.enc_p.proj.weight.dtype)
        x, m_p, logs_p, x_mask = self.enc_p(ids, lengths)
        mask = x_mask.to(x.dtype)
        logw = self.dp(x, mask, scales[2])
        w_ceil = torch.ceil(torch.exp(logw) * mask * scales[1])
        return m_p, logs_p, mask, w_ceil

    def latents(self, m_p: torch.Tensor, logs_p: torch.Tensor, mask: torch.Tensor, w_ceil: torch.Tensor,
                scales: torch.Tensor, frames: int) -> torch.Tensor:
        """Phase 2 (static shapes per batch, phoneme count and ``frames``, at least the longest item's):
        expand the prior along the durations, sample it, and run the flow in reverse. z [B, 192, frames],
        zero beyond each item's own frames."""
        noise_scale = scales.to(m_p.dtype)[0]
        y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1)
        f = torch.arange(frames, device=m_p.device, dtype=w_ceil.dtype)
        y_mask = (f.unsqueeze(0) < y_lengths.unsqueeze(1)).unsqueeze(1).to(m_p.dtype)  # [B, 1, F]
        # The monotonic alignment: frame f belongs to phoneme p while cumsum(w)[p-1] <= f < cumsum(w)[p].
        ends = torch.cumsum(w_ceil, -1).squeeze(1)  # [B, T]
        starts = ends - w_ceil.squeeze(1)
        f = f.view(1, -1, 1)
        path = ((f >= starts.unsqueeze(1)) & (f < ends.unsqueeze(1))).to(m_p.dtype)  # [B, F, T]
        path = path * y_mask.transpose(1, 2) * mask
        m_p = torch.matmul(path, m_p.transpose(1, 2)).transpose(1, 2)
        logs_p = torch.matmul(path, logs_p.transpose(1, 2)).transpose(1, 2)
        z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p) * noise_scale
        return self.flow.reverse(z_p, y_mask) * y_mask

    @staticmethod
    def samples(w_ceil: torch.Tensor, hop_length: int) -> torch.Tensor:
        """Each item's audio length in samples (frames, at least one, times the hop) [B]."""
        return torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long() * hop_length

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, scales: torch.Tensor):
        m_p, logs_p, mask, w_ceil = self.durations(ids, lengths, scales)
        samples = self.samples(w_ceil, self.hop_length)
        frames = int(samples.max()) // self.hop_length  # data-dependent: a host sync between the phases
        return self.latents(m_p, logs_p, mask, w_ceil, scales, frames), w_ceil, samples


# -- decoder ---------------------------------------------------------------------------------------


class _ResBlock(nn.Module):
    """HiFi-GAN's ResBlock2: one dilated conv per dilation, each with a residual connection."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2)
                                   for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class _Generator(nn.Module):
    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        ch = h.upsample_initial
        self.n_kernels = len(h.resblock_kernels)
        self.conv_pre = nn.Conv1d(h.hidden, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernels, strict=True)):
            out = ch // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(ch // 2 ** i, out, k, u, padding=(k - u) // 2))
            for kernel, dilations in zip(h.resblock_kernels, h.resblock_dilations, strict=True):
                self.resblocks.append(_ResBlock(out, kernel, dilations))
        self.conv_post = nn.Conv1d(out, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.n_kernels:(i + 1) * self.n_kernels]
            x = sum(block(x) for block in blocks) / self.n_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class VitsDecoder(nn.Module):
    """z [B, 192, F] -> output [B, 1, 1, F * hop] (audio in [-1, 1])."""

    def __init__(self, h: VitsHyper) -> None:
        super().__init__()
        self.dec = _Generator(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z).unsqueeze(1)
