"""The case library: every generation kept with what made it, in SQLite beside 16-bit PNGs.

No Qt here (the window drives it; a script may too). Layout under ``engine.paths.user_data_dir()``::

    library/
      library.sqlite3           cases, tags (WAL journal)
      images/<uuid>.png         16-bit greyscale PNG of each case (full range 0..65535)

Crash safety
- An image is written to a temporary file in ``images/``, fsynced and renamed into place
  (``engine.fileio.atomic_write_bytes``) *before* its row is inserted in a transaction, so a row
  never points at a half-written file. A crash between the two leaves an orphan image, which
  :meth:`CaseLibrary.remove_orphans` deletes on a later open.
- Several processes may share the library (two windows, a script). :meth:`CaseLibrary.add` holds
  SQLite's write lock (``BEGIN IMMEDIATE``) from before the image is written until its row is
  committed, and :meth:`CaseLibrary.remove_orphans` takes the same lock before it lists the folder,
  so it never sees another process's image between its write and its commit. It also leaves files
  younger than ``orphan_grace_s`` (10 minutes) alone, for folders where file locking is unreliable
  (network shares) and for processes of versions that wrote without the lock.
- Every change is one SQLite transaction; a failed write (disk full) rolls back and raises,
  leaving the previous state intact.
- Deleting removes the row first (committed), then the file.
- Every SQLite error (locked, damaged file, read-only folder, full disk) reaches the caller as a
  :class:`LibraryError` that names the database file and says what to do.

A case can be regenerated exactly: :meth:`Case.request` rebuilds the one-image GenerationRequest
(seed, steps, guidance, sampler, eta, prompts) and ``model_fingerprint`` says which weights made it.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from engine import paths
from engine.checker import ImageCheck
from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset, write_dicom
from engine.fileio import atomic_write_bytes
from engine.imaging import encode_png
from engine.pipeline import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the finding check's columns (added to older libraries on open, cases kept)
DB_NAME = "library.sqlite3"
ORPHAN_GRACE_S = 600.0  # an image without a row is left alone this long (seconds) after it was written
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    image_file TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    seed INTEGER NOT NULL,
    num_steps INTEGER NOT NULL,
    guidance_scale REAL NOT NULL,
    sampler TEXT NOT NULL,
    eta REAL NOT NULL DEFAULT 0,
    model_id TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT '',
    total_s REAL,
    notes TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tags (
    case_id INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (case_id, tag)
);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags(tag);
"""
# columns added after version 1, as ALTER TABLE adds them: NULL in a case made before (or without) a check
_ADDED_COLUMNS = (
    ("check_ok", "INTEGER"),  # 1 passed, 0 failed (an asked finding low or an absent one high), NULL not checked
    ("check_scores", "TEXT"),  # JSON: finding -> the checker's score
    ("check_line", "TEXT NOT NULL DEFAULT ''"),  # what the window showed: asked · the checker sees · verdict
)


class LibraryError(RuntimeError):
    """The library could not be read or written; the message says which file and what to do."""


# SQLite's primary result codes (sqlite3.h) -> what the user can do about them
_ADVICE = {
    5: "another program (a second CXR Studio?) is using it: close that program and try again",  # BUSY
    6: "another program (a second CXR Studio?) is using it: close that program and try again",  # LOCKED
    8: "the file or its folder is read-only: make both writable",  # READONLY
    10: "the disk could not be read or written: check the disk and that it is not full",  # IOERR
    11: "the file is damaged: quit CXR Studio and move the file aside (a new, empty library is then made)",  # CORRUPT
    13: "the disk is full: free some disk space",  # FULL
    14: "the file cannot be opened: check that it and its folder exist and are writable",  # CANTOPEN
    26: "the file is not a case library (or is damaged): quit CXR Studio and move it aside",  # NOTADB
}


def library_error(db_path: Path, action: str, exc: sqlite3.Error) -> LibraryError:
    """A LibraryError for a SQLite error: which file, what failed, what to do (from the result code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    advice = _ADVICE.get(code & 0xFF) if isinstance(code, int) else None
    if advice is None:
        advice = "check that the folder is writable and the disk is not full"
    return LibraryError(f"the case library {db_path} could not be {action}: {exc}; {advice}.")


@dataclass(frozen=True)
class Case:
    id: int
    created: str  # ISO 8601 with offset
    image_path: Path
    width: int
    height: int
    prompt: str
    negative_prompt: str
    seed: int
    num_steps: int
    guidance_scale: float
    sampler: str
    eta: float
    model_id: str
    model_fingerprint: str
    provider: str = ""
    total_s: float | None = None
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    check_ok: bool | None = None  # the finding check: None when the image was not checked
    check_scores: dict[str, float] | None = None
    check_line: str = ""

    def request(self) -> GenerationRequest:
        """The one-image request that regenerates this case (on the same model: see model_fingerprint)."""
        return GenerationRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            num_steps=self.num_steps,
            guidance_scale=self.guidance_scale,
            sampler=self.sampler,
            seed=self.seed,
            batch_size=1,
            eta=self.eta,
        )

    def image_info(self) -> SyntheticImageInfo:
        return SyntheticImageInfo(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            num_steps=self.num_steps,
            guidance_scale=self.guidance_scale,
            sampler=self.sampler,
            model_id=self.model_id,
            model_fingerprint=self.model_fingerprint,
        )

    @property
    def title(self) -> str:
        text = " ".join(self.prompt.split())
        return text if len(text) <= 80 else text[:77] + "..."


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise LibraryError(f"{path}: the image is missing or unreadable")
    return image


class CaseLibrary:
    """SQLite + PNG store of generated cases. One object per thread (SQLite connections are not shared)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, orphan_grace_s: float = ORPHAN_GRACE_S) -> None:
        """Open (or make) the library under ``root`` and remove orphan images older than ``orphan_grace_s``."""
        self.root = Path(root) if root is not None else paths.user_data_dir() / "library"
        self.images_dir = self.root / "images"
        self.db_path = self.root / DB_NAME
        self.orphan_grace_s = float(orphan_grace_s)
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(
                f"the case library folder {self.images_dir} cannot be made: {exc}; "
                "check that the folder is writable and the disk is not full."
            ) from exc
        try:
            self._db = sqlite3.connect(self.db_path, timeout=10.0)
        except sqlite3.Error as exc:
            raise library_error(self.db_path, "opened", exc) from exc
        try:
            with self._errors("opened"):
                self._db.row_factory = sqlite3.Row
                self._db.execute("PRAGMA foreign_keys = ON")
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                with self._db:
                    self._db.executescript(_SCHEMA)
                    self._add_missing_columns()
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.remove_orphans()
        except BaseException:
            self._db.close()
            raise

    def _add_missing_columns(self) -> None:
        """Migrate a library made by an older version: add the columns it lacks; its rows stay as they are."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(cases)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:
                try:
                    self._db.execute(f"ALTER TABLE cases ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:  # another process opening it added it first: fine
                    if "duplicate column" not in str(exc):
                        raise

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn a SQLite error in the block into a LibraryError naming the database file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise library_error(self.db_path, action, exc) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CaseLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # 1. adding ------------------------------------------------------------------------------------

    def add(
        self,
        result: GenerationResult,
        index: int = 0,
        *,
        image: np.ndarray | None = None,
        check: ImageCheck | None = None,
    ) -> Case:
        """Keep image ``index`` of a result: PNG first (atomic), then its row, both under the write lock.
        ``check``: the finding checker's verdict on that image, recorded with it (None: not checked)."""
        if not 0 <= index < len(result.seeds):
            raise ValueError(f"image index {index} is outside the batch of {len(result.seeds)}")
        pixels = result.to_uint16()[index] if image is None else np.asarray(image)
        png = encode_png(pixels)  # before the lock: other processes wait only for the write itself
        request = result.request
        name = f"{uuid.uuid4().hex}.png"
        path = self.images_dir / name
        created = datetime.now().astimezone().isoformat(timespec="seconds")
        # 1. take the write lock first: remove_orphans (in any process) waits for it, so it never finds
        #    this image before its row is committed
        with self._errors("written"):
            self._db.execute("BEGIN IMMEDIATE")
        try:
            # 2. the image, then its row, then the commit that releases the lock
            try:
                atomic_write_bytes(path, png)
            except OSError as exc:
                raise LibraryError(f"{path}: the image could not be saved: {exc}. Free some disk space.") from exc
            with self._errors("written"):
                cursor = self._db.execute(
                    "INSERT INTO cases (created, image_file, width, height, prompt, negative_prompt, seed, "
                    "num_steps, guidance_scale, sampler, eta, model_id, model_fingerprint, provider, total_s, "
                    "check_ok, check_scores, check_line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        created, name, int(pixels.shape[1]), int(pixels.shape[0]), request.prompt,
                        request.negative_prompt, int(result.seeds[index]), int(result.steps_done),
                        float(request.guidance_scale), request.sampler, float(request.eta), result.model_id,
                        result.model_fingerprint, result.provider, result.timings.get("total_s"),
                        None if check is None else int(check.ok),
                        None if check is None else json.dumps(check.scores, sort_keys=True),
                        "" if check is None else check.line(),
                    ),
                )  # fmt: skip
                self._db.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            path.unlink(missing_ok=True)
            raise
        return self.get(int(cursor.lastrowid))

    # 2. reading -----------------------------------------------------------------------------------

    def _case(self, row: sqlite3.Row) -> Case:
        tags = tuple(
            r[0] for r in self._db.execute("SELECT tag FROM tags WHERE case_id = ? ORDER BY tag", (row["id"],))
        )
        return Case(
            id=row["id"],
            created=row["created"],
            image_path=self.images_dir / row["image_file"],
            width=row["width"],
            height=row["height"],
            prompt=row["prompt"],
            negative_prompt=row["negative_prompt"],
            seed=row["seed"],
            num_steps=row["num_steps"],
            guidance_scale=row["guidance_scale"],
            sampler=row["sampler"],
            eta=row["eta"],
            model_id=row["model_id"],
            model_fingerprint=row["model_fingerprint"],
            provider=row["provider"],
            total_s=row["total_s"],
            notes=row["notes"],
            tags=tags,
            check_ok=None if row["check_ok"] is None else bool(row["check_ok"]),
            check_scores=None if row["check_scores"] is None else json.loads(row["check_scores"]),
            check_line=row["check_line"],
        )

    def get(self, case_id: int) -> Case:
        with self._errors("read"):
            row = self._db.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                raise KeyError(f"no case {case_id} in the library")
            return self._case(row)

    def search(
        self, text: str = "", *, tag: str | None = None, check_failed: bool = False, limit: int = 500
    ) -> list[Case]:
        """Newest first. ``text`` matches (case-insensitively, every word) prompt, negative prompt,
        notes, tags, model id and the seed; ``tag`` keeps cases with exactly that tag; ``check_failed``
        keeps cases whose finding check failed (unchecked cases are not among them)."""
        clauses, params = [], []
        for word in text.split():
            like = "%" + _escape_like(word) + "%"
            clauses.append(
                "(prompt LIKE ? ESCAPE '\\' OR negative_prompt LIKE ? ESCAPE '\\' OR notes LIKE ? ESCAPE '\\' "
                "OR model_id LIKE ? ESCAPE '\\' OR CAST(seed AS TEXT) = ? "
                "OR EXISTS (SELECT 1 FROM tags t WHERE t.case_id = cases.id AND t.tag LIKE ? ESCAPE '\\'))"
            )
            params += [like, like, like, like, word, like]
        if tag:
            clauses.append("EXISTS (SELECT 1 FROM tags t WHERE t.case_id = cases.id AND t.tag = ?)")
            params.append(tag)
        if check_failed:
            clauses.append("check_ok = 0")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._errors("read"):
            rows = self._db.execute(f"SELECT * FROM cases {where} ORDER BY id DESC LIMIT ?", (*params, limit))
            return [self._case(row) for row in rows.fetchall()]

    def __len__(self) -> int:
        with self._errors("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM cases").fetchone()[0])

    def all_tags(self) -> list[str]:
        with self._errors("read"):
            return [r[0] for r in self._db.execute("SELECT DISTINCT tag FROM tags ORDER BY tag")]

    def image(self, case: Case | int) -> np.ndarray:
        """The case's stored pixels, (H, W) uint16."""
        case = self.get(case) if isinstance(case, int) else case
        return read_png(case.image_path)

    # 3. editing -----------------------------------------------------------------------------------

    def set_notes(self, case_id: int, notes: str) -> Case:
        with self._errors("written"), self._db:
            if self._db.execute("UPDATE cases SET notes = ? WHERE id = ?", (notes, case_id)).rowcount != 1:
                raise KeyError(f"no case {case_id} in the library")
        return self.get(case_id)

    def set_tags(self, case_id: int, tags: Iterable[str]) -> Case:
        clean = sorted({t.strip() for t in tags if t.strip()})
        if any(len(t) > 64 or "," in t for t in clean):
            raise ValueError("a tag is at most 64 characters and has no comma")
        self.get(case_id)
        with self._errors("written"), self._db:
            self._db.execute("DELETE FROM tags WHERE case_id = ?", (case_id,))
            self._db.executemany("INSERT INTO tags (case_id, tag) VALUES (?, ?)", [(case_id, t) for t in clean])
        return self.get(case_id)

    def delete(self, case_ids: Sequence[int] | int) -> None:
        ids = [case_ids] if isinstance(case_ids, int) else list(case_ids)
        cases = [self.get(i) for i in ids]
        with self._errors("written"), self._db:
            self._db.executemany("DELETE FROM cases WHERE id = ?", [(i,) for i in ids])
        for case in cases:
            case.image_path.unlink(missing_ok=True)

    def remove_orphans(self) -> int:
        """Delete images no row refers to, and temporary files, left by a crash between writing the file
        and committing its row; returns how many. Runs under the write lock (see :meth:`add`), and keeps
        files younger than ``orphan_grace_s``. Skipped (0) when another process holds the lock too long."""
        cutoff = time.time() - self.orphan_grace_s
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in (5, 6):  # BUSY, LOCKED: tidy on a later open
                log.warning("case library: orphan images not checked, %s is busy", self.db_path)
                return 0
            raise library_error(self.db_path, "opened", exc) from exc
        except sqlite3.Error as exc:
            raise library_error(self.db_path, "opened", exc) from exc
        removed = 0
        try:
            with self._errors("read"):
                known = {r[0] for r in self._db.execute("SELECT image_file FROM cases")}
            for path in self.images_dir.iterdir():
                if path.name in known or path.suffix not in (".png", ".tmp"):
                    continue
                try:
                    if path.stat().st_mtime > cutoff:
                        continue  # perhaps another process's image whose row is on its way
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:  # a read-only folder: leave it, the library still reads
                    log.warning("case library: orphan %s not removed: %s", path, exc)
        except OSError as exc:
            log.warning("case library: %s not checked for orphan images: %s", self.images_dir, exc)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()  # nothing was written: this only releases the lock
        if removed:
            log.info("case library: removed %d orphan image file(s)", removed)
        return removed

    # 4. teaching file -----------------------------------------------------------------------------

    def export_teaching_file(
        self, case_ids: Sequence[int], folder: str | os.PathLike[str], *, title: str = "CXR Studio teaching file"
    ) -> Path:
        """Each case as a DICOM file (one synthetic study per case) plus a PNG and an index.html
        listing prompts, parameters and notes. Returns the index.html path."""
        folder = Path(folder)
        if not case_ids:
            raise ValueError("select at least one case to export")
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for number, case_id in enumerate(case_ids, start=1):
            case = self.get(case_id)
            pixels = self.image(case)
            stem = f"case{number:03d}"
            study = StudyContext.synthetic(study_description=f"Teaching case {number}")
            write_dicom(build_dataset(pixels, case.image_info(), study), folder / f"{stem}.dcm")
            preview = (pixels.astype(np.float64) / 257.0).round().astype(np.uint8)
            atomic_write_bytes(folder / f"{stem}.png", encode_png(preview))
            rows.append((number, stem, case))
        atomic_write_bytes(folder / "index.html", _teaching_html(title, rows).encode("utf-8"))
        atomic_write_bytes(
            folder / "cases.json",
            json.dumps(
                [{"file": f"{stem}.dcm", **_case_json(case)} for _, stem, case in rows], indent=2, ensure_ascii=False
            ).encode("utf-8"),
        )
        return folder / "index.html"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _case_json(case: Case) -> dict[str, object]:
    return {
        "prompt": case.prompt,
        "negative_prompt": case.negative_prompt,
        "seed": case.seed,
        "num_steps": case.num_steps,
        "guidance_scale": case.guidance_scale,
        "sampler": case.sampler,
        "eta": case.eta,
        "model_id": case.model_id,
        "model_fingerprint": case.model_fingerprint,
        "created": case.created,
        "tags": list(case.tags),
        "notes": case.notes,
    }


def _teaching_html(title: str, rows: list[tuple[int, str, Case]]) -> str:
    e = html.escape
    items = []
    for number, stem, case in rows:
        tags = ", ".join(case.tags) or "none"
        notes = e(case.notes).replace("\n", "<br>") or "<i>no notes</i>"
        items.append(
            f"""<section>
<h2>Case {number}</h2>
<img src="{stem}.png" alt="case {number}" width="256">
<p><b>Prompt:</b> {e(case.prompt)}</p>
<p><b>Negative prompt:</b> {e(case.negative_prompt) or "<i>none</i>"}</p>
<p><b>Notes:</b> {notes}</p>
<p class="meta">Tags: {e(tags)} &middot; seed {case.seed} &middot; {case.num_steps} steps &middot; {e(case.sampler)}
&middot; guidance {case.guidance_scale:g} &middot; model {e(case.model_id)} ({e(case.model_fingerprint[:16])})
&middot; <a href="{stem}.dcm">DICOM</a></p>
</section>"""
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:auto}} section{{border-top:1px solid #ccc;padding:1em 0}}
img{{image-rendering:auto;background:#000;float:right;margin-left:1em}} .meta{{color:#555;font-size:90%}}
.warn{{background:#fee;padding:.5em;border:1px solid #c66}}</style></head>
<body><h1>{e(title)}</h1>
<p class="warn">SYNTHETIC IMAGES generated from text by CXR Studio. No real patient. Not for diagnosis.</p>
{"".join(items)}
</body></html>
"""
