"""A layer's activation vectors over an atlas's dataset, streamed, and the bounded sample buffer fits use.

``LayerStream`` runs the atlas's model over its images (the forward stops at the layer) and yields (sample ids,
activation vectors) per batch. ``positions`` says what one sample is: ``image`` — the record pass's per-image
vector (``unitlens.recording.reduce.reduce_output`` with the atlas's spatial / token reduction) — or ``spatial``
— every spatial position of a (B, C, H, W) map, every token of a (B, T, C) output.

``Samples`` reads a stream once and keeps what every fit needs: count, per-channel mean and variance (float64
sums), minimum, and the samples themselves *only while they fit in ``buffer_bytes``*; a larger stream is read
again for each later pass (an SAE epoch streams the model again), through a shuffle buffer of the same bound. A
seeded reservoir of at most ``reservoir`` samples (uniform without replacement: the samples with the smallest
random keys, no more than the buffer holds) serves fits that need the data at once (ICA) and SAE
initialisation. Memory: at most about three times ``buffer_bytes`` of activations — the buffer, one shuffled
(or, once, joined) copy of it, and the reservoir — plus one batch; never the whole dataset's activations.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from unitlens.atlas.atlas import Atlas
from unitlens.basis.defaults import BATCH_SIZE, BUFFER_MB, POSITIONS, RESERVOIR
from unitlens.data.loading import load_batches
from unitlens.errors import BadInput, BasisError
from unitlens.recording.reduce import reduce_output
from unitlens.runtime import OutputCapture, Progress, first_tensor, pick_device, prepare_model
from unitlens.zoo.units import channel_dim_of


def positions_of(output: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """A layer output as (B, P, C): every spatial position (channel-first maps) or token (channel-last) a row."""
    out = first_tensor(output)
    if out.ndim == 2:
        return out[:, None]
    if channel_dim_of(out, channel_dim) == 1:
        return out.movedim(1, -1).reshape(out.shape[0], -1, out.shape[1])
    return out.reshape(out.shape[0], -1, out.shape[-1])


def position_reduction(output: torch.Tensor, channel_dim: int, spatial: str, tokens: str) -> str:
    """How the record pass reduces this output over positions (``spatial`` for channel-first maps, else
    ``tokens``), as ``reduce_output``'s ``tokens`` argument for a (B, P, F) tensor."""
    out = first_tensor(output)
    return spatial if out.ndim > 2 and channel_dim_of(out, channel_dim) == 1 else tokens


class TensorStream:
    """A stream over an (N, C) tensor already in memory (the Python API, tests), in chunks of ``chunk`` rows."""

    def __init__(self, x: torch.Tensor, chunk: int = 4096, description: str = "tensor"):
        if x.ndim != 2:
            raise BadInput(f"activations must be (samples, channels), got shape {tuple(x.shape)}")
        self.x, self.chunk, self.description = x.float(), chunk, description
        self.width = x.shape[1]

    def chunks(self, progress: bool = False, what: str = "") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ids = torch.arange(self.x.shape[0])
        for s in range(0, self.x.shape[0], self.chunk):
            x = self.x[s:s + self.chunk]
            check_finite(x, ids[s:s + self.chunk], self.description, lambda i: f"row {i}")
            yield ids[s:s + self.chunk], x


def check_finite(x: torch.Tensor, ids: torch.Tensor, where: str, name) -> None:
    """Raise ``BasisError`` naming the first sample whose activations are NaN or inf."""
    bad = ~torch.isfinite(x).all(1)
    if bool(bad.any()):
        first = int(ids[bad][0])
        raise BasisError(f"{where}: the activations of {int(bad.sum())} sample(s) of this batch are not finite (NaN or "
                         f"inf), first {name(first)}; a basis fitted on them would be meaningless, so nothing was "
                         "fitted: leave those images out (record the atlas on a dataset without them) or choose "
                         "another layer")


class LayerStream:
    """Activation vectors of one recorded layer of an atlas over its (readable) samples, batch by batch."""

    def __init__(self, atlas: Atlas | str, layer: str, positions: str, model: Any = None,
                 batch_size: int = BATCH_SIZE, device: str | torch.device | None = None, channels_last: bool = True):
        if positions not in POSITIONS:
            raise BadInput(f"positions must be one of {', '.join(POSITIONS)}, got '{positions}'")
        self.atlas = Atlas.open(atlas)
        self.atlas.require_complete()
        if layer in self.atlas.derived_layers:
            raise BasisError(f"'{layer}' is a derived layer (basis features); fit a basis on a recorded layer: "
                             f"{self.atlas.derived_layers[layer].get('parent')}")
        self.info = self.atlas.layer(layer)  # an unknown layer is an error naming the atlas's layers
        units = self.atlas.units()
        rows = units[units["layer"] == layer]
        if int(rows["nonfinite"].sum()):
            bad = rows[rows["nonfinite"] > 0]
            raise BasisError(f"layer {layer}: the record pass saw non-finite activations (NaN or inf) in "
                             f"{len(bad)} unit(s), e.g. unit {int(bad['unit'].iloc[0])} on "
                             f"{int(bad['nonfinite'].iloc[0])} image(s); a basis fitted on them would be "
                             "meaningless, so nothing was fitted: record the atlas on a dataset without those images "
                             "or choose another layer")
        self.layer, self.positions, self.batch_size, self.channels_last = layer, positions, batch_size, channels_last
        self.device = pick_device(device)
        self.model = model if model is not None else self.atlas.load_model()
        self.width = int(self.info.width) if self.info.width else int(len(rows))
        config = self.atlas.manifest.config
        self.spatial, self.tokens = config.spatial, config.tokens
        samples = self.atlas.samples()
        self.ids = samples.loc[~samples["skipped"].astype(bool), "id"].astype(int).tolist()
        self.dataset = self.atlas.dataset()
        self.description = f"layer {layer} of atlas {self.atlas.path}"

    def samples_of(self, output: torch.Tensor) -> torch.Tensor:
        """One layer output (B, ...) -> its samples: (B, C) for ``image``, (B, P, C) for ``spatial``."""
        cdim = self.info.channel_dim
        if self.positions == "image":
            return reduce_output(output, channel_dim_of(first_tensor(output), cdim), self.spatial, self.tokens)
        return positions_of(output, cdim)

    def outputs(self, progress: bool = True, what: str = "activations", start: int = 0
                ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """(sample ids, {layer: output}) per batch from sample position ``start`` on; the forward stops at the layer."""
        yield from model_outputs(self.model, self.dataset, self.ids[start:], [self.layer], self.batch_size,
                                 self.device, progress, f"{what} of {self.layer}", len(self.ids), start,
                                 self.channels_last)

    def chunks(self, progress: bool = True, what: str = "activations") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(sample ids (n,), activation vectors (n, C) float32) per batch of images."""
        for ids, outputs in self.outputs(progress, what):
            x = self.samples_of(outputs[self.layer])
            per = x.shape[1] if x.ndim == 3 else 1
            x = x.reshape(-1, x.shape[-1]).float()
            sample_ids = torch.tensor(ids).repeat_interleave(per)
            check_finite(x, sample_ids, self.description, lambda i: f"sample {i} ({self.dataset.path(i)})")
            yield sample_ids, x


def model_outputs(model: Any, dataset: Any, ids: list[int], layers: list[str], batch_size: int,
                  device: torch.device, progress: bool, what: str, total: int, done: int = 0,
                  channels_last: bool = True) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(sample ids, {layer: output}) per batch of the chosen samples; unreadable images are skipped with a
    warning naming them. The forward stops after the deepest of ``layers``."""
    import warnings

    def skipped(sample_id: int, path, err: Exception) -> None:
        warnings.warn(f"skipping unreadable image {path} (sample {sample_id}): {err}", stacklevel=4)

    net = prepare_model(model.model, device, channels_last)
    with Progress(what, total, progress, completed=done, unit="img") as bar, OutputCapture(net, layers) as capture:
        for batch_ids, x, _ in load_batches(dataset, ids, model.transform, batch_size, device, skipped=skipped):
            with torch.inference_mode():  # not around the yield: the caller may train on what it gets (an SAE)
                outputs = capture.run(x)
            yield batch_ids, outputs
            bar.advance(len(batch_ids))


class Samples:
    """One pass over a stream: statistics, the samples themselves while they fit the buffer, a reservoir.

    ``chunks()`` replays the cache or streams again; ``minibatches(b)`` gives shuffled batches of ``b`` rows
    (a full shuffle of the cache, else a shuffle buffer of the same bound over a new stream).
    """

    def __init__(self, stream: Any, buffer_bytes: int = BUFFER_MB << 20, reservoir: int = RESERVOIR,
                 seed: int = 0, progress: bool = True):
        self.stream, self.buffer_bytes, self.seed, self.progress = stream, buffer_bytes, seed, progress
        self.width = stream.width
        C = self.width
        self.buffer_rows = max(1, buffer_bytes // (4 * C))
        self.reservoir_rows = max(1, min(reservoir, self.buffer_rows))
        gen = torch.Generator().manual_seed(seed)
        n, total, total_sq = 0, torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
        low = torch.full((C,), float("inf"))
        cache: list[torch.Tensor] | None = []
        cache_keys: list[torch.Tensor] = []
        res_x, res_key = torch.empty(0, C), torch.empty(0)
        shift = None
        for _, x in stream.chunks(progress, "reading"):
            if x.shape[1] != C:
                raise BasisError(f"{stream.description}: activations have {x.shape[1]} channels, expected {C}")
            x = x.detach().float().cpu()
            if shift is None:
                shift = x[0].double()
            d = x.double() - shift
            total += d.sum(0)
            total_sq += (d * d).sum(0)
            low = torch.minimum(low, x.amin(0))
            keys = torch.rand(x.shape[0], generator=gen)
            n += x.shape[0]
            if cache is not None and n <= self.buffer_rows:
                cache.append(x)
                cache_keys.append(keys)
                continue
            if cache is not None:  # the stream outgrows the buffer: from here on only the reservoir is kept
                res_x, res_key = torch.cat([res_x, *cache]), torch.cat([res_key, *cache_keys])
                cache, cache_keys = None, []
            res_x, res_key = self._keep_smallest(torch.cat([res_x, x]), torch.cat([res_key, keys]))
        if n == 0:
            raise BasisError(f"{stream.description}: no activations (no readable image)")
        self.n = n
        mean_d = total / n
        assert shift is not None  # set by the first batch, and n > 0
        self.mean = shift + mean_d
        self.var = (total_sq / n - mean_d * mean_d).clamp_min(0)
        self.min = low
        self.cached = torch.cat(cache) if cache is not None else None
        del cache
        self._reservoir = res_x if self.cached is None else torch.randperm(n, generator=gen)[:self.reservoir_rows]
        self.generator = gen

    @property
    def reservoir(self) -> torch.Tensor:
        """At most ``reservoir`` samples drawn uniformly without replacement (seeded), (R, C)."""
        return self.cached[self._reservoir] if self.cached is not None else self._reservoir

    def _keep_smallest(self, x: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] <= self.reservoir_rows:
            return x, keys
        keep = torch.topk(keys, self.reservoir_rows, largest=False).indices
        return x[keep], keys[keep]

    @property
    def scale(self) -> float:
        """Root mean per-channel variance: SAEs train on (x − mean) / scale."""
        return float(self.var.mean().sqrt().clamp_min(1e-12))

    def chunks(self, what: str = "activations") -> Iterator[torch.Tensor]:
        """Every sample once, in stream order: (n, C) chunks."""
        if self.cached is not None:
            for s in range(0, self.n, 65536):
                yield self.cached[s:s + 65536]
            return
        for _, x in self.stream.chunks(self.progress, what):
            yield x.detach().float().cpu()

    def minibatches(self, batch_size: int, drop_last: bool = False,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Shuffled batches of ``batch_size`` samples, a new order each call (from ``generator``, default the
        samples' own seeded one)."""
        gen = generator if generator is not None else self.generator
        if self.cached is not None:
            order = torch.randperm(self.n, generator=gen)
            stop = self.n - (self.n % batch_size if drop_last else 0)
            for s in range(0, stop, batch_size):
                yield self.cached[order[s:s + batch_size]]
            return
        pool: list[torch.Tensor] = []
        held = 0
        rest = torch.empty(0, self.width)
        for x in self.chunks("training"):
            pool.append(x)
            held += x.shape[0]
            if held + rest.shape[0] < self.buffer_rows:
                continue
            mixed = torch.cat([rest, *pool])
            pool.clear()  # the buffer and one shuffled copy at most
            mixed = mixed[torch.randperm(mixed.shape[0], generator=gen)]
            half = mixed.shape[0] // 2 // batch_size * batch_size or batch_size
            for s in range(0, half, batch_size):
                yield mixed[s:s + batch_size]
            rest, pool, held = mixed[half:], [], 0
        mixed = torch.cat([rest, *pool])
        mixed = mixed[torch.randperm(mixed.shape[0], generator=gen)]
        stop = mixed.shape[0] - (mixed.shape[0] % batch_size if drop_last else 0)
        for s in range(0, stop, batch_size):
            yield mixed[s:s + batch_size]

    def blocks(self, rows: int) -> Iterator[torch.Tensor]:
        """Every sample once, regrouped into blocks of at least ``rows`` samples (unless there are fewer)."""
        held, pending, count = None, [], 0
        for x in self.chunks():
            pending.append(x)
            count += x.shape[0]
            if count >= rows:
                if held is not None:
                    yield held
                held, pending, count = torch.cat(pending), [], 0
        if pending:
            held = torch.cat(pending) if held is None else torch.cat([held, *pending])
        if held is not None:
            yield held
