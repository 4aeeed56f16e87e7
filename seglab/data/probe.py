"""The part of `seglab data` that runs on the host holding the data, standard library only.

The workstation imports it for this machine and, for a remote host, sends this file's
source as ``python3 -c SOURCE`` over the host's SSH connection, with the request on stdin,
so one small command answers each question without copying any data. The request is a
JSON object whose ``op`` is one of:

- ``scan``: ``kind`` (cityscapes, ade20k, voc or auto), ``root``, ``deep``, ``sample``: the
  images and labels per split, images without a label, total size, a sampled (or, with
  ``deep``, complete) check of the files' magic bytes and, with ``deep``, a tree hash.
- ``manifest``: ``root``: every file's relative path, size and mtime (ns), the partial
  files an interrupted ``sync`` left, and the free bytes there.
- ``hash``: ``root``, ``paths``: the SHA-256 of each listed file (null when missing).
- ``free``: ``root``: the free bytes where it is (or would be created).
- ``prepare``: ``kind``, ``source`` (folder of the downloaded archives), ``target``:
  unpack the official archives into the trainer's layout (:func:`prepare`).

The answer is one JSON value on stdout; an expected failure is ``{"error": MESSAGE}``
with exit status 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tarfile
import zipfile
from typing import Any

PART_SUFFIX = ".seglab-part"
PROBE_FAILED = 3


class ProbeError(Exception):
    """An expected failure, reported to the workstation as its message."""


_MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",)}
_CHUNK = 1 << 20
_VOC_SPLITS = (
    ("train", "SegmentationClass"),
    ("val", "SegmentationClass"),
    ("trainaug", "SegmentationClassAug"),
)


def _files(root: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every regular file under root (symlinks are
    not followed), sorted."""
    found = []
    folders = [""]
    while folders:
        rel = folders.pop()
        with os.scandir(os.path.join(root, rel)) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    folders.append(path)
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    found.append((path, info.st_size, info.st_mtime_ns))
    return sorted(found)


def _names(folder: str, suffix: str) -> set[str]:
    """Names in `folder` ending in `suffix` (the suffix removed); empty when no folder."""
    try:
        return {n[: -len(suffix)] for n in os.listdir(folder) if n.endswith(suffix)}
    except FileNotFoundError:
        return set()


def _pairs_cityscapes(root: str) -> dict[str, tuple[list[str], list[str], set[str]]]:
    splits = {}
    for split in ("train", "val", "test"):
        images_dir = os.path.join(root, "leftImg8bit", split)
        if not os.path.isdir(images_dir):
            continue
        images: list[str] = []
        labels: list[str] = []
        missing: set[str] = set()
        for city in sorted(os.listdir(images_dir)):
            stems = _names(os.path.join(images_dir, city), "_leftImg8bit.png")
            gt = _names(os.path.join(root, "gtFine", split, city), "_gtFine_labelIds.png")
            images += [f"leftImg8bit/{split}/{city}/{s}_leftImg8bit.png" for s in sorted(stems)]
            labels += [f"gtFine/{split}/{city}/{s}_gtFine_labelIds.png" for s in sorted(gt)]
            missing |= {f"{city}/{s}" for s in stems - gt}
        splits[split] = (images, labels, missing)
    return splits


def _pairs_ade20k(root: str) -> dict[str, tuple[list[str], list[str], set[str]]]:
    splits = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        if not os.path.isdir(os.path.join(root, "images", folder)):
            continue
        stems = _names(os.path.join(root, "images", folder), ".jpg")
        gt = _names(os.path.join(root, "annotations", folder), ".png")
        splits[split] = (
            [f"images/{folder}/{s}.jpg" for s in sorted(stems)],
            [f"annotations/{folder}/{s}.png" for s in sorted(gt & stems)],
            stems - gt,
        )
    return splits


def _pairs_voc(root: str) -> dict[str, tuple[list[str], list[str], set[str]]]:
    splits = {}
    jpeg = _names(os.path.join(root, "JPEGImages"), ".jpg")
    for split, label_dir in _VOC_SPLITS:
        listing = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
        if not os.path.isfile(listing):
            continue
        with open(listing) as handle:
            ids = handle.read().split()
        gt = _names(os.path.join(root, label_dir), ".png")
        splits[split] = (
            [f"JPEGImages/{i}.jpg" for i in ids if i in jpeg],
            [f"{label_dir}/{i}.png" for i in ids if i in gt],
            {i for i in ids if i not in gt} | {f"{i} (no image)" for i in ids if i not in jpeg},
        )
    return splits


def _resolve(kind: str, root: str) -> tuple[str | None, str]:
    """The dataset kind (detected when 'auto') and the folder its layout starts at."""
    candidates = {
        "cityscapes": [root],
        "ade20k": [root, os.path.join(root, "ADEChallengeData2016")],
        "voc": [root, os.path.join(root, "VOC2012"), os.path.join(root, "VOCdevkit", "VOC2012")],
    }
    marks = {
        "cityscapes": "leftImg8bit",
        "ade20k": "images",
        "voc": os.path.join("ImageSets", "Segmentation"),
    }
    for name in [kind] if kind != "auto" else list(candidates):
        for folder in candidates[name]:
            if os.path.isdir(os.path.join(folder, marks[name])):
                return name, folder
    return (None if kind == "auto" else kind), root


def _magic_ok(path: str) -> bool:
    expected = _MAGIC.get(os.path.splitext(path)[1], (b"",))
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in expected) and len(head) > 0


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan(kind: str, root: str, deep: bool = False, sample: int = 64) -> dict[str, Any]:
    """What `seglab data ls` reports of the dataset at `root` (see the module doc)."""
    result: dict[str, Any] = {"root": root, "present": os.path.isdir(root), "kind": None}
    if not result["present"]:
        return result
    found, base = _resolve(kind, root)
    result["kind"] = found
    finder = {"cityscapes": _pairs_cityscapes, "ade20k": _pairs_ade20k, "voc": _pairs_voc}
    pairs = finder[found](base) if found in finder else {}
    files = _files(root)
    result["files"] = len(files)
    result["size"] = sum(size for _, size, _ in files)
    checked: list[str] = []
    splits = {}
    for split, (images, labels, missing) in pairs.items():
        splits[split] = {
            "images": len(images),
            "labels": len(labels),
            "missing_labels": len(missing),
            "examples": sorted(missing)[:5],
        }
        checked += images + labels
    result["splits"] = splits
    if not deep:
        checked = random.Random(0).sample(checked, min(sample, len(checked)))
    result["checked"] = len(checked)
    result["bad_files"] = [p for p in checked if not _magic_ok(os.path.join(base, p))][:20]
    if deep:
        tree = hashlib.sha256()
        for rel, _, _ in files:
            tree.update(f"{rel}\0{_sha256(os.path.join(root, rel))}\n".encode())
        result["tree_sha256"] = tree.hexdigest()
    return result


def manifest(root: str) -> dict[str, Any]:
    """Every file under `root` as [path, size, mtime_ns], partial sync files apart, and the
    free bytes there."""
    if not os.path.isdir(root):
        return {"present": False, "files": [], "parts": [], "free": free_space(root)}
    files: list[list[Any]] = []
    parts: list[list[Any]] = []
    for rel, size, mtime in _files(root):
        (parts if rel.endswith(PART_SUFFIX) else files).append([rel, size, mtime])
    return {"present": True, "files": files, "parts": parts, "free": free_space(root)}


def hashes(root: str, paths: list[str]) -> dict[str, str | None]:
    """SHA-256 of each relative path under `root` (None when it is not a file)."""
    out: dict[str, str | None] = {}
    for rel in paths:
        path = os.path.join(root, rel)
        out[rel] = _sha256(path) if os.path.isfile(path) else None
    return out


def free_space(path: str) -> int:
    """Free bytes for an unprivileged user where `path` is (or its nearest existing parent)."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


ARCHIVES: dict[str, list[tuple[str, str, int]]] = {
    "cityscapes": [
        ("leftImg8bit_trainvaltest.zip", "leftImg8bit/", 0),
        ("gtFine_trainvaltest.zip", "gtFine/", 0),
    ],
    "ade20k": [("ADEChallengeData2016.zip", "ADEChallengeData2016/", 1)],
    "voc": [("VOCtrainval_11-May-2012.tar", "VOCdevkit/VOC2012/", 2)],
}
"""Per dataset: (archive file name as published, the folder it must hold, path components
to strip so the trainer's layout starts at the target)."""
SPLITS = {
    "cityscapes": ("train", "val", "test"),
    "ade20k": ("train", "val"),
    "voc": ("train", "val"),
}


def _members(path: str, folder: str) -> tuple[list[tuple[str, int]], Any]:
    """(name, size) of the regular files of an archive, and the open archive."""
    name = os.path.basename(path)
    try:
        if path.endswith(".zip"):
            archive: Any = zipfile.ZipFile(path)
            files = [(i.filename, i.file_size) for i in archive.infolist() if not i.is_dir()]
        else:
            archive = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the caller
            files = [(m.name, m.size) for m in archive.getmembers() if m.isfile()]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ProbeError(
            f"{name} is not a readable archive ({exc}); a truncated download?"
        ) from exc
    if not any(f.startswith(folder) for f, _ in files):
        archive.close()
        raise ProbeError(f"{name} holds no {folder} folder: not the archive seglab expects")
    for member, _ in files:
        if member.startswith("/") or ".." in member.split("/"):
            archive.close()
            raise ProbeError(f"{name}: member {member!r} would land outside the target")
    return files, archive


def _extract(archive: Any, files: list[tuple[str, int]], strip: int, temp: str) -> None:
    """Write each regular file, less its first `strip` path components, under `temp`."""
    for member, _ in files:
        parts = member.split("/")[strip:]
        if not parts:
            continue
        dest = os.path.join(temp, *parts)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        source = archive.open(member) if isinstance(archive, zipfile.ZipFile) else None
        if source is None:
            source = archive.extractfile(member)
        with source, open(dest, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)


def prepare(kind: str, source: str, target: str) -> dict[str, Any]:
    """Unpack `kind`'s official archives from folder `source` into `target` atomically.

    The archives are opened (a truncated zip has no central directory; a truncated tar
    ends early), their folders checked, free space checked against their unpacked size,
    then every member is written into a temporary sibling of `target` (zip members'
    CRC-32s are checked as they are read) which is scanned for the official splits and
    renamed to `target`. Returns the scan of the result."""
    if os.path.exists(target) and os.listdir(target):
        raise ProbeError(f"{target} already exists and is not empty")
    opened = []
    try:
        for name, folder, strip in ARCHIVES[kind]:
            path = os.path.join(source, name)
            if not os.path.isfile(path):
                raise ProbeError(f"{path} is missing (the archive as the dataset publishes it)")
            files, archive = _members(path, folder)
            opened.append((name, files, archive, strip))
        needed = sum(size for _, files, _, _ in opened for _, size in files)
        free = free_space(target)
        if needed > free:
            raise ProbeError(
                f"{target}: the archives unpack to {needed / 1e9:.2f} GB "
                f"but only {free / 1e9:.2f} GB are free"
            )
        parent = os.path.dirname(os.path.abspath(target))
        os.makedirs(parent, exist_ok=True)
        temp = os.path.join(parent, f".{os.path.basename(target)}.seglab-unpack-{os.getpid()}")
        try:
            for name, files, archive, strip in opened:
                try:
                    _extract(archive, files, strip, temp)
                except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
                    raise ProbeError(f"{name} is damaged ({exc}); download it again") from exc
            result = scan(kind, temp)
            missing = [s for s in SPLITS[kind] if not result["splits"].get(s, {}).get("images")]
            if missing:
                raise ProbeError(f"the archives hold no {', '.join(missing)} split of {kind}")
            if os.path.isdir(target):
                os.rmdir(target)
            os.rename(temp, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    finally:
        for _, _, archive, _ in opened:
            archive.close()
    return scan(kind, target)


def answer(request: dict[str, Any]) -> Any:
    """The answer to one request (see the module doc)."""
    op = request["op"]
    root = os.path.expanduser(request.get("root", ""))
    if op == "scan":
        return scan(request["kind"], root, request.get("deep", False), request.get("sample", 64))
    if op == "manifest":
        return manifest(root)
    if op == "hash":
        return hashes(root, request["paths"])
    if op == "free":
        return free_space(root)
    if op == "prepare":
        from_dir = os.path.expanduser(request["source"])
        return prepare(request["kind"], from_dir, os.path.expanduser(request["target"]))
    raise ProbeError(f"unknown request {op!r}")


if __name__ == "__main__":
    try:
        json.dump(answer(json.loads(sys.stdin.read())), sys.stdout)
    except ProbeError as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        sys.exit(PROBE_FAILED)
