"""``load_batches``: model inputs of chosen samples in batches, decoded and preprocessed ahead in threads.

Steps that need images of particular samples (activation crops, relevance, probes) load them through this one
loader; the record pass, which reads every sample in order, uses a ``DataLoader`` over ``ImageDataset``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from unitlens.runtime import prefetch

Skipped = Callable[[int, Path, Exception], None]


def load_batches(dataset: Any, ids: Sequence[int], transform: Callable, batch_size: int, device: torch.device,
                 skipped: Skipped | None = None, channels_last: bool = True
                 ) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, int]]]]:
    """(ids, model inputs on ``device``, original (width, height) per image) in chunks of ``batch_size`` ids.

    The next chunk is decoded while the caller works on this one. Unreadable images are left out of their
    chunk and reported to ``skipped(id, path, error)``; a chunk with no readable image is not yielded.
    4-D inputs are made channels-last unless ``channels_last`` is false (same numbers, faster convolutions).
    """

    def load(sample_id: int) -> tuple[torch.Tensor, tuple[int, int]]:
        image = dataset.image(int(sample_id))
        return transform(image), image.size

    for chunk, loaded in prefetch(list(ids), load, batch_size, errors="return"):
        good = [(int(i), item) for i, item in zip(chunk, loaded) if not isinstance(item, Exception)]
        if skipped is not None:
            for i, item in zip(chunk, loaded):
                if isinstance(item, Exception):
                    skipped(int(i), dataset.path(int(i)), item)
        if not good:
            continue
        x = torch.stack([t for _, (t, _) in good]).to(device)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        yield [i for i, _ in good], x, [size for _, (_, size) in good]
