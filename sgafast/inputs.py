"""The items of a run: files, folders and @list files, sorted, de-duplicated and named by path."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from .errors import SgafastError
from .images import IMAGE_SUFFIXES

RUN_FOLDER = "_sgafast"  # run-level files (summary, merged records, failures); never an output


@dataclasses.dataclass(frozen=True, order=True)
class Item:
    """One input image: ``name`` is its path relative to the argument that named it (posix)."""

    name: str
    path: Path = dataclasses.field(compare=False)

    @property
    def stem(self) -> str:
        """The name without its suffix: the outputs' base name and the noise stream's identity."""
        return self.name.rsplit(".", 1)[0] if "." in Path(self.name).name else self.name

    def output(self, outdir: Path, suffix: str) -> Path:
        return outdir / f"{self.stem}{suffix}"


def _walk(folder: Path):
    """Image files below ``folder``; a symbolic link to a folder is followed once."""
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back into the tree: do not descend twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                path = Path(root) / name
                yield path.relative_to(folder).as_posix(), path


def _list_file(spec: str) -> list[str]:
    """The paths of an ``@list`` file, relative ones resolved against the list's folder; blank
    lines and comments (from a ``#`` at the start of a line or after a space) are skipped."""
    listing = Path(spec[1:])
    try:
        lines = listing.read_text().splitlines()
    except OSError as exc:
        raise SgafastError(f"{spec}: cannot read the list ({exc.strerror})") from exc
    entries = [re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip() for line in lines]
    return [entry if os.path.isabs(entry) else str(listing.parent / entry)
            for entry in entries if entry]


def _prefix(path: Path, spec: str) -> str | None:
    """A list entry's path below the list's folder (posix), which its outputs keep; None for a
    path given directly or outside the list's folder."""
    if not spec.startswith("@"):
        return None
    relative = os.path.relpath(path, Path(spec[1:]).parent)
    return None if relative.startswith("..") else Path(relative).as_posix()


def _entries(path: Path, spec: str) -> tuple[list[tuple[str, Path]], str | None]:
    """The (name, file) of the images a path stands for, and why there are none."""
    prefix = _prefix(path, spec)
    if path.is_dir():
        entries = [(name if prefix in (None, ".") else f"{prefix}/{name}", file)
                   for name, file in _walk(path)]
        return entries, None if entries else "no images in this folder"
    if path.exists():
        return [(prefix or path.name, path)], None
    return [], "no such file or folder"


def collect(specs: list[str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """The sorted, de-duplicated items of files, folders and ``@list`` files (one path a line,
    relative to the list's folder), and the (input, reason) of each refused list entry or item.

    A folder's images are named by their path below it (``a/0001.png``), a file by its name, a
    list's entries by their path below the list's folder (``x/img.png`` stays ``x/img.png``), so
    two files with one name in different folders never collide; the same file reached twice
    counts once. Nothing is opened but the folders: sizes are probed later. A path on the
    command line that names no image (mistyped, or a folder without images) is refused before
    any work (``SgafastError``); an ``@list``'s entries are refused one by one instead.
    """
    found, refused, nothing = {}, {}, []
    for spec in specs:
        listed = spec.startswith("@")
        for given in _list_file(spec) if listed else [spec]:
            entries, why = _entries(Path(given), spec)
            if why and listed:
                refused[given] = f"listed in {spec[1:]}: {why}"
            elif why:
                nothing.append(f"{given}: {why}")
            for name, file in entries:
                found.setdefault(os.path.realpath(file), Item(name, file))
    if nothing or not (found or refused):
        raise SgafastError("; ".join(nothing) or f"no images in {', '.join(specs)}")
    return _named(sorted(found.values()), list(refused.items()))


def _named(found: list[Item], refused: list[tuple[str, str]]):
    """(the items whose output names are free, refused ones appended to ``refused``)."""
    items, names = [], {}
    for item in found:
        if item.name.split("/")[0] == RUN_FOLDER:
            refused.append((str(item.path), f"{RUN_FOLDER}/ is where sgafast keeps its run "
                                             "files; rename the folder"))
        elif item.stem in names:
            refused.append((str(item.path), f"its output name {item.stem} collides with "
                                            f"{names[item.stem]}; rename one, or pass their "
                                            "common folder instead"))
        else:
            names[item.stem] = item.path
            items.append(item)
    return items, refused
