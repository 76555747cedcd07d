"""Every error unitlens raises on purpose: one base, three kinds, and the few domain types that refine them.

A message always names the problem and the fix (the command or option to use). Commands catch
``UnitlensError`` and print its message; anything else is a bug and keeps its traceback.

Kinds:

- ``BadInput``: an argument, file or option is wrong (also a ``ValueError``);
- ``NotComputed``: a result a step needs has not been computed yet (the message names the command);
- ``Unavailable``: weights, a package or a feature cannot be had here (the message says how to get it).

Domain types (``AtlasError``, ``LensError``, ``RelevanceError``, ``AuditError``, ``BasisError``) say where a
failure happened; their not-computed cases are also ``NotComputed``.

``Note`` is the warning category of facts worth knowing that are not problems (a stale lock taken over); the
command line prints them as ``note: ...``.
"""
from __future__ import annotations


class UnitlensError(Exception):
    """Base of every deliberate unitlens error."""


class BadInput(UnitlensError, ValueError):
    """An argument, option or input file is wrong."""


class MissingFile(BadInput, FileNotFoundError):
    """An input path does not exist."""


class NotComputed(UnitlensError):
    """A result a step needs has not been computed yet; the message names the command that computes it."""


class Unavailable(UnitlensError):
    """Weights, a package or a feature cannot be had here; the message says how to get them."""


class AtlasError(UnitlensError):
    """An atlas is missing, damaged, busy, or does not fit a step."""


class AtlasIncomplete(AtlasError, NotComputed):
    """The record run of an atlas has not finished."""


class AtlasBusy(AtlasError):
    """Another process holds the atlas's write lock."""


class CorruptFile(AtlasError):
    """A file of an atlas cannot be read; the message names the file and how to repair it."""


class LensError(UnitlensError):
    """A SemanticLens step cannot run: bad probe, unknown layer, mismatched atlases or weights."""


class NotEmbedded(LensError, NotComputed):
    """An atlas (or a layer of it) has not been embedded with a backend yet."""


class RelevanceError(UnitlensError):
    """A relevance step cannot run or a stored relevance result is inconsistent."""


class RelevanceNotComputed(RelevanceError, NotComputed):
    """The relevance a step needs has not been computed yet."""


class RelevanceUnavailable(Unavailable):
    """CRP/LRP relevance is not available for this architecture (attention / token models such as ViTs)."""


class AuditError(UnitlensError):
    """An audit step cannot run (no relevant unit, unknown class folders, no stored audit, ...)."""


class AuditNotComputed(AuditError, NotComputed):
    """A class has no stored audit yet."""


class BasisError(UnitlensError):
    """A basis cannot be fitted, stored or recorded (non-finite activations or fit, a name taken, a bad matrix)."""


class BasisNotComputed(BasisError, NotComputed):
    """A basis a step needs has not been fitted (or its features not recorded) yet."""


class BackendUnavailable(Unavailable):
    """An embedding backend's weights or package cannot be had here."""


class WeightsUnavailable(Unavailable):
    """Pretrained weights of an analysed model cannot be had here (no network, no cache, package missing)."""


class CheckpointMismatch(BadInput):
    """A checkpoint does not fit the architecture it is loaded into."""


class TooFewExemplars(BadInput):
    """An atlas keeps fewer exemplars per unit than the MIS tasks need."""


class NotFound(BadInput, LookupError):
    """A named atlas, study, layer, unit or file does not exist (the explorer answers 404)."""


class UnknownLayer(AtlasError, NotFound):
    """A layer name or glob matches no layer of an atlas (the message lists the layers it has)."""


class Forbidden(UnitlensError):
    """A request the explorer refuses to answer (403): a file that is not one of the atlas's dataset images as
    recorded, or a ``Host`` header that does not name the server."""


class TooFewImages(TooFewExemplars):
    """The dataset holds too few images for MIS: a unit's most and least activating sets would share images."""


class BiasWarning(UserWarning):
    """A result was computed as asked but is biased (e.g. MIS whose top and bottom exemplars share images)."""


class Note(UserWarning):
    """A fact worth knowing that is not a problem (a warning category: ``warnings.warn(text, Note)``)."""
