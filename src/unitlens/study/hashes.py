"""``FileHashes(path)``: the content hashes of the files a study reads (its images, accuracy folders, checkpoints
and model files), kept in the study folder's ``hashes.parquet``.

Every ``study run`` asks what each step is computed from (``unitlens.study.inputs``), which includes the bytes of
those files; with this table a rerun reads only the files whose size or times changed since they were hashed (the
rule of ``unitlens.data.hashing``), so checking a study of many models over a large dataset costs one ``stat`` per
file. The table is a cache: a damaged or missing one only means hashing every file again.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from unitlens.atlas.files import write_parquet
from unitlens.data.datasets import load_dataset
from unitlens.data.hashing import COLUMNS, file_hashes

KEY = "path"


class FileHashes:
    """Content hashes by path, reused while a file is unchanged; ``save()`` writes what was hashed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, tuple] = {}
        self.fingerprints: dict[tuple[str, bool], str] = {}  # (data spec, content hash) -> fingerprint, this run
        try:
            table = pd.read_parquet(self.path, columns=[KEY, *COLUMNS]) if self.path.is_file() else None
        except Exception:  # noqa: BLE001 - a damaged cache means hashing again, nothing else
            table = None
        if table is not None:
            self._take(table)

    def _take(self, table: pd.DataFrame) -> None:
        rows = table[[KEY, *COLUMNS]].dropna(subset=["content_hash"])
        self.rows.update({r[0]: r[1:] for r in rows.itertuples(index=False, name=None)})

    def known(self, paths: list[str] | None = None) -> pd.DataFrame:
        """The hashes kept for ``paths`` (default: all) as a table (path and ``unitlens.data.hashing.COLUMNS``)."""
        rows = self.rows.items() if paths is None else ((p, self.rows[p]) for p in paths if p in self.rows)
        return pd.DataFrame([(p, *v) for p, v in rows], columns=[KEY, *COLUMNS])

    def files(self, paths: list[str]) -> list[str | None]:
        """The content hash of each file (None: it cannot be read)."""
        paths = [str(p) for p in paths]
        table, _ = file_hashes(paths, self.known(paths))
        self._take(table.assign(**{KEY: paths}))
        return [h if isinstance(h, str) else None for h in table["content_hash"]]

    def dataset(self, spec: str, content_hash: bool = True) -> str:
        """The fingerprint of the dataset ``spec`` (a ``--data`` value), as its record step computes it; each
        dataset is fingerprinted once per run."""
        if (spec, content_hash) not in self.fingerprints:
            data = load_dataset(spec, content_hash=content_hash)
            if content_hash:
                data.hash_contents(known=self.known(list(data.samples["path"])))
                self._take(data.samples)
            self.fingerprints[spec, content_hash] = data.fingerprint()
        return self.fingerprints[spec, content_hash]

    def save(self) -> None:
        write_parquet(self.path, self.known())
