"""Images a step could not read: the reason in words, and a log that names each file without flooding stderr.

``Unreadable(kind, reason)`` takes the place of an image that failed to open (it pickles, so DataLoader workers
can hand it back). ``UnreadableLog`` warns with the full reason the first time a kind of failure occurs, names
the next few files of that kind briefly, counts the rest, and sums them up at the end of the run.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

NAMED_PER_KIND = 5  # files named per kind of failure before the rest are only counted


@dataclass(frozen=True)
class Unreadable:
    """Why one image could not be read: ``kind`` (the error type) and ``reason`` (what happened, what to do)."""

    kind: str
    reason: str

    @classmethod
    def of(cls, err: BaseException) -> "Unreadable":
        return cls(type(err).__name__, describe(err))


def describe(err: BaseException) -> str:
    """Why an image could not be opened, in words a user can act on."""
    if isinstance(err, Image.DecompressionBombError):
        return (f"{err} Pillow refuses images of more than 2 x PIL.Image.MAX_IMAGE_PIXELS "
                f"({Image.MAX_IMAGE_PIXELS:,}) pixels as possible decompression bombs; if the file is trusted, "
                "raise that limit (PIL.Image.MAX_IMAGE_PIXELS = None lifts it) before recording")
    if isinstance(err, FileNotFoundError):
        return "the file does not exist (moved or deleted since the dataset was listed)"
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@dataclass
class UnreadableLog:
    """The unreadable images of one run. ``add`` warns (full reason once per kind, then the file names of the
    next ``named - 1`` of that kind); ``summary()`` is one line for the end of the run, or None."""

    named: int = NAMED_PER_KIND
    items: list[tuple[int, Path, Unreadable]] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)

    def add(self, sample_id: int, path: str | Path, why: Unreadable | BaseException) -> None:
        why = why if isinstance(why, Unreadable) else Unreadable.of(why)
        self.items.append((int(sample_id), Path(path), why))
        self.kinds[why.kind] += 1
        seen = self.kinds[why.kind]
        if seen == 1:
            warnings.warn(f"skipping unreadable image {path}: {why.reason}", stacklevel=2)
        elif seen <= self.named:
            warnings.warn(f"skipping unreadable image {path} ({why.kind}, as above)", stacklevel=2)
        elif seen == self.named + 1:
            warnings.warn(f"more images are unreadable ({why.kind}); the rest are counted, not named", stacklevel=2)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str | None:
        if not self.items:
            return None
        parts = ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())
        return f"{len(self.items)} unreadable image(s) skipped ({parts}), e.g. {self.items[0][1]}"
