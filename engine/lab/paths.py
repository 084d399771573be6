"""What the dashboard may touch on the server: paths inside the lab's data folder, models it already has.

Whoever reaches the dashboard types paths that the server opens: a store, a JSONL file, an upload's name,
a model folder. The dashboard confines them to the data folder ($PLL_HOME, default the project folder)
and to the paths its operator configured ($PLL_STORE, $PLL_JOBS); a path outside is refused before the
server looks at it, so the answer says nothing about what exists there. A Hugging Face model is started
only when it is already in the local cache, unless $PLL_ALLOW_DOWNLOADS=1. The CLI is not confined: whoever
runs it already has the machine.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

from engine.data.edgewise import FILES
from engine.data.splitfile import SPLIT_FILE
from engine.settings import data_home, downloads_allowed

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
MAX_UPLOAD_NAME = 100  # characters of the uploaded file's own name kept (a file name may have 255 bytes)


class PathError(ValueError):
    """A path or model the dashboard does not open; the message says why and what is allowed."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def confine(path, what: str, also=()) -> Path:
    """The absolute path when it lies inside the data folder, or is one of `also` (the operator's own paths)."""
    text = str(path).strip()
    if not text or "\x00" in text:
        raise PathError(f"{what}: give a path inside the data folder {data_home()}")
    p = Path(text).expanduser()
    p = (p if p.is_absolute() else data_home() / p).resolve()
    if _inside(p, data_home()) or any(p == Path(a).resolve() for a in also if a):
        return p
    raise PathError(f"{what}: {text} is outside the data folder {data_home()} (set PLL_HOME to serve another "
                    "folder, or use the command line)")


def upload_path(folder, name: str, digest: str) -> Path:
    """Where an uploaded file is kept: `<digest>-<its name, made safe>` inside `folder`, whatever the name was."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    base = base[-MAX_UPLOAD_NAME:] or "upload.jsonl"
    return Path(folder) / f"{digest[:16]}-{base}"


CHUNK = 1 << 20  # uploads are copied and hashed a megabyte at a time, never held twice


def _chunks(data):
    """The bytes of an upload (bytes, or a binary file object such as Streamlit's UploadedFile) a chunk at a time."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            yield view[i:i + CHUNK]
        return
    data.seek(0)
    while chunk := data.read(CHUNK):
        yield chunk


def _spool(data, tmp: Path) -> bytes:
    """Copy an upload into the file tmp while hashing it; its sha256 digest."""
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for chunk in _chunks(data):
            h.update(chunk)
            f.write(chunk)
    return h.digest()


def save_upload(folder, files) -> Path:
    """Where uploaded data now lies, saved once (the same bytes again reuse it): one file (a JSONL) as
    upload_path names it, or EdgeWisePersona's three files (and optionally a split file) together in one folder
    named so; PathError for any other set of files, saying what is accepted. files: (name, bytes or a binary file
    object); each is streamed to disk and hashed on the way, so a big upload is not copied in memory."""
    files = [(Path(str(name).replace("\\", "/")).name, data) for name, data in files]
    if len(files) == 1 and files[0][0] in FILES:
        raise PathError(f"{files[0][0]} alone is not a dataset: EdgeWisePersona's release is the three files "
                        f"{', '.join(FILES)}, uploaded together")
    names = sorted(name for name, _ in files)
    if len(files) > 1 and (sorted(set(names)) != names or not set(FILES) <= set(names) <= set(FILES) | {SPLIT_FILE}):
        raise PathError(f"upload one JSONL file, or EdgeWisePersona's three files {', '.join(FILES)} together (and "
                        f"{SPLIT_FILE}, optionally); got {', '.join(names)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload.tmp{os.getpid()}-{threading.get_ident()}"
    _remove(tmp)
    try:
        if len(files) == 1:
            (name, data), = files
            path = upload_path(folder, name, _spool(data, tmp).hex())
        else:
            tmp.mkdir()
            digests = {name: _spool(data, tmp / name) for name, data in files}
            digest = hashlib.sha256(b"".join(n.encode() + b"\0" + digests[n] for n in sorted(digests)))
            path = upload_path(folder, "edgewise", digest.hexdigest())
        if not path.exists():
            try:
                os.replace(tmp, path)
            except OSError:  # another session saved the same upload first (a folder cannot replace a folder)
                pass
    finally:
        _remove(tmp)
    return path


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def check_model(model: str) -> None:
    """A model the dashboard may load: the registry, a folder in the data folder, or a cached hub model."""
    from engine.models.loading import REGISTRY
    if model in REGISTRY:
        return
    if not HUB_ID.match(model) or (data_home() / model).is_dir():
        confine(model, "model folder")  # a local model: only inside the data folder
        return
    if downloads_allowed():
        return
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(model, "config.json"), str)
    except (ImportError, ValueError):  # not a valid repo id
        cached = False
    if not cached:
        raise PathError(f"model {model}: not in this server's Hugging Face cache, and the dashboard starts no "
                        "downloads (fetch it once with the command line, or set PLL_ALLOW_DOWNLOADS=1)")
