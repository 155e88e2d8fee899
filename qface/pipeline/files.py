"""What a run reads and writes, checked before any work: every entry under a folder accounted for, output paths
usable before the model loads, file names that are not UTF-8 written without loss.

Rule of a folder run: an entry whose suffix is an image or video suffix is analysed, or becomes an error row when
it cannot be (a broken or looping symbolic link, a FIFO, device or socket: these are refused from `stat`, never
opened, since reading one can block forever); a sub-folder that cannot be listed is an error row; every other
entry is skipped and counted, by reason, in the run's final line. Paths given one by one are always attempted.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qface.pipeline.io import VIDEO_SUFFIXES, image_suffixes, special_file_error

OUTPUT_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

SKIP_OTHER = "not an image or video suffix"
SKIP_FOLDER = "sub-folder (without --recursive)"
SKIP_SPECIAL = "FIFO, device or socket"
SKIP_BROKEN_LINK = "broken or looping symbolic link"
SKIP_SEEN_FOLDER = "folder already visited (a symbolic link to it)"


@dataclass
class Inputs:
    """A run's inputs: files to analyse, entries that are error rows, and skipped entries counted by reason."""

    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    errors: list[tuple[Path, Exception]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.images) + len(self.videos) + len(self.errors)


def find_inputs(paths: list[Path], recursive: bool = False) -> Inputs:
    """Folders → their image and video files (sorted); other paths as given. See the module docstring."""
    found = Inputs()
    for path in paths:
        if path.is_dir():
            _walk(path, recursive, found, visited=set())
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            found.videos.append(path)
        else:
            found.images.append(path)  # a missing or special file is refused by the reader, which stats first
    found.images.sort()
    found.videos.sort()
    return found


def _walk(folder: Path, recursive: bool, found: Inputs, visited: set[tuple[int, int]]) -> None:
    try:
        info = folder.stat()
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        found.errors.append((folder, error))
        return
    visited.add((info.st_dev, info.st_ino))
    for entry in entries:
        path = Path(entry.path)
        media = path.suffix.lower() in image_suffixes() | VIDEO_SUFFIXES
        try:
            info = os.stat(path)  # follows links: a link is what it points to
        except OSError as error:  # broken link (ENOENT), link loop (ELOOP), permission
            if media:
                why = "a broken or looping symbolic link" if path.is_symlink() else "cannot stat"
                found.errors.append((path, OSError(f"{path}: {why} ({error.strerror})")))
            else:
                found.skipped[SKIP_BROKEN_LINK] += 1
            continue
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            if not recursive:
                found.skipped[SKIP_FOLDER] += 1
            elif (info.st_dev, info.st_ino) in visited:
                found.skipped[SKIP_SEEN_FOLDER] += 1
            else:
                _walk(path, recursive, found, visited)
        elif not media:
            found.skipped[SKIP_SPECIAL if not stat.S_ISREG(mode) else SKIP_OTHER] += 1
        elif not stat.S_ISREG(mode):
            found.errors.append((path, special_file_error(path, mode)))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            found.videos.append(path)
        else:
            found.images.append(path)


def skipped_line(skipped: Counter[str]) -> str:
    """`skipped 3 (2 not an image or video suffix, 1 FIFO, device or socket)`, or '' when nothing was skipped."""
    if not skipped:
        return ""
    return f"skipped {sum(skipped.values())} (" + ", ".join(f"{n} {reason}" for reason, n in skipped.items()) + ")"


def output_format(path: Path, option: str = "--out") -> str:
    """'csv' or 'jsonl' from the suffix (any case); anything else is refused rather than guessed."""
    try:
        return OUTPUT_SUFFIXES[path.suffix.lower()]
    except KeyError:
        why = " (JSON lines in a .json file would break json.load)" if path.suffix.lower() == ".json" else ""
        raise ValueError(f"{option} {path}: use a name ending in .jsonl (JSON lines) or .csv{why}") from None


def check_output_file(path: Path, option: str = "--out") -> None:
    """Before the model loads: a known format, not a folder, its folder created if missing and writable."""
    output_format(path, option)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path}: is a folder; give a file name such as {path / 'results.csv'}")
    _writable_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{option} {path}: the file is not writable")


def check_output_folder(folder: Path, option: str) -> None:
    """Before the model loads: `--annotate` / `--attention` must be (or become) a writable folder."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{option} {folder}: exists and is not a folder")
    _writable_folder(folder, option)


def _writable_folder(folder: Path, option: str) -> None:
    folder = folder if str(folder) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{option}: cannot create the folder {folder} ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{option}: the folder {folder} is not writable")


def printable(text: str) -> str:
    """Valid UTF-8 for CSV cells and terminal lines: bytes of a file name that are not UTF-8 (which Python holds
    as surrogate escapes) become `\\xNN`, so the name loses nothing and no strict writer fails on it."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not a file-name byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
