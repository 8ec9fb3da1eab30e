"""Run and stage folders on a local disk or in an object store (s3://, gs://, ...) via pyarrow.fs.

On a cluster of several machines every node must reach the run folders: a local path lands on
each node's own disk. An object store is shared but has no rename, so the commit protocol never
needs one there: a folder's files are written in place and its marker (a stage's manifest.json, a
run's metrics.json) last, and readers trust a folder only once the marker is there. On a local
disk the same code keeps its atomic renames.

`location(path)` is a `pathlib.Path` for a local path and a `RemotePath` (the subset of Path this
project uses) for a URI, so folder code reads the same for both. Code that needs files on disk
(torch.load, transformers' from_pretrained) takes `local_copy(folder)`: a node-local copy of a
committed, hence immutable, folder, cached by its URI.
"""
from __future__ import annotations

import codecs
import fnmatch
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from .errors import InputError

_GZIP_MAGIC = b"\x1f\x8b"


def is_remote(path: str | os.PathLike | RemotePath) -> bool:
    """A URI with a scheme pyarrow opens (s3://, gs://, hdfs://, ...); `file://` counts as local."""
    if isinstance(path, RemotePath):
        return True
    scheme = urlsplit(str(path)).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive


@cache
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]


class RemotePath:
    """A file or folder in an object store, with the pathlib methods this project uses."""

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        self.scheme, self.bucket = parts.scheme, parts.netloc
        self.key = parts.path.strip("/")
        self.fs = _filesystem(self.scheme, self.bucket)

    # names
    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str | os.PathLike) -> RemotePath:
        return RemotePath(f"{self}/{str(name).strip('/')}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        return RemotePath(f"{self.scheme}://{self.bucket}/{self.key.rsplit('/', 1)[0] if '/' in self.key else ''}")

    def resolve(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    @property
    def _path(self) -> str:  # pyarrow's path: bucket/key
        return f"{self.bucket}/{self.key}".rstrip("/")

    # queries
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self._path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def stat(self) -> SimpleNamespace:
        """`st_size` and `st_mtime`, as os.stat_result has them."""
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=info.size or 0, st_mtime=info.mtime.timestamp() if info.mtime else 0.0)

    def relative_to(self, other: RemotePath) -> str:
        prefix = str(other).rstrip("/") + "/"
        if not str(self).startswith(prefix):
            raise ValueError(f"{self} is not inside {other}")
        return str(self)[len(prefix):]

    def iterdir(self) -> Iterator[RemotePath]:
        for info in self.fs.get_file_info(pafs.FileSelector(self._path, allow_not_found=True)):
            yield RemotePath(f"{self.scheme}://{info.path}")

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """What matches `pattern` inside this folder; wildcards only in the last part ("plots/*.png")."""
        *folders, name = pattern.split("/")
        base = self
        for part in folders:
            base = base / part
        return (p for p in base.iterdir() if fnmatch.fnmatch(p.name, name))

    # reads and writes: one request each, so a reader never sees half a file
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self._path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self._path) as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Nothing to do: an object store's folders are the prefixes of its keys."""

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self.fs.delete_file(self._path)


Location = Path | RemotePath


def location(path: str | os.PathLike | RemotePath) -> Location:
    """A local path as `Path` (a `file://` URI too), a URI as `RemotePath`."""
    if isinstance(path, RemotePath):
        return path
    if is_remote(path):
        return RemotePath(str(path))
    text = str(path)
    return Path(urlsplit(text).path if text.startswith("file://") else text)


def resolve(path: str) -> str:
    """A config's folder made absolute; URIs stay as they are (`s3://b/x` must not become `$PWD/s3:/b/x`)."""
    return path if is_remote(path) else str(location(path).expanduser().resolve())


def write_bytes(path: Location, payload: bytes) -> None:
    """Write a whole file so that no reader sees half of it and a crash leaves none: a temp file
    of a unique name, synced, then renamed over the target on a local disk; one PUT in an object
    store."""
    if path.is_dir():
        raise InputError("a folder: give the name of a file to write", path=path)
    if isinstance(path, RemotePath):
        path.write_bytes(payload)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Location, text: str) -> None:
    """`write_bytes` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def _not_a_folder(path: str | os.PathLike) -> None:
    if location(path).is_dir():
        raise InputError("a folder, where a JSON file was expected", path=path)


def read_json(path: str | os.PathLike) -> Any:
    """Parse a ``.json`` or gzip-compressed JSON file (by suffix or magic bytes), local or in an
    object store."""
    _not_a_folder(path)
    raw = location(path).read_bytes()
    try:
        if str(path).endswith(".gz") or raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a valid JSON file: {exc}", path=path) from None
    except RecursionError:
        raise InputError("not a JSON file this reader takes: nested deeper than Python's recursion limit",
                         path=path) from None


def iter_json_list(path: str | os.PathLike, what: str = "items", chunk: int = 1 << 20) -> Iterator[Any]:
    """The items of a JSON list file (``.json`` or gzip, local or in an object store), parsed one at a
    time from a `chunk`-character window, so that a corpus of any size streams in flat memory (DocRED's
    distant file is one 1.4 GB list). A file whose top level is not a list is parsed whole and refused."""
    _not_a_folder(path)
    with open_binary(path) as f:
        gz = f.read(2) == _GZIP_MAGIC or str(path).endswith(".gz")
    decoder, utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    with open_binary(path) as raw, (gzip.GzipFile(fileobj=raw) if gz else raw) as stream:
        buf, pos, eof, line = "", 0, False, 1  # `line`: the line at buf[0], for error messages

        def fill() -> bool:
            nonlocal buf, pos, eof, line
            line += buf.count("\n", 0, pos)
            block = stream.read(chunk)
            more = utf8.decode(block, final=not block)
            buf, pos, eof = buf[pos:] + more, 0, not block
            return bool(block)

        def fail(msg: str, at: int) -> InputError:
            col = at - (buf.rfind("\n", 0, at) + 1) + 1
            return InputError(f"not a valid JSON file: {msg}: line {line + buf.count(chr(10), 0, at)} column {col}",
                              path=path)

        def skip_space() -> str:
            """The next non-blank character ('' at the end), with `pos` on it."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not fill():
                    return buf[pos:pos + 1]

        try:
            fill()
            if skip_space() != "[":
                value = read_json(path)
                raise InputError(f"expected a JSON list of {what}, got {type(value).__name__}", path=path)
            pos += 1
            if skip_space() == "]":
                pos += 1
            else:
                while True:
                    while True:  # an item, reading on while it is cut by the window's end
                        try:
                            item, end = decoder.raw_decode(buf, pos)
                        except json.JSONDecodeError as exc:
                            start = pos
                            if eof or not fill():
                                raise fail(exc.msg, exc.pos - (0 if eof else start)) from None
                            continue
                        cut = end == len(buf) or buf[end] in "0123456789.eE+-"  # a number may go on
                        if isinstance(item, (int, float)) and cut and not eof and fill():
                            continue
                        break
                    pos = end
                    yield item
                    sep = skip_space()
                    pos += 1
                    if sep == "]":
                        break
                    if sep != ",":
                        raise fail("Expecting ',' delimiter", pos - 1) if sep else InputError("not a valid JSON file: the list is not closed at the end of the file", path=path)
                    skip_space()
            if skip_space():
                raise fail("Extra data", pos)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise InputError(f"not a valid JSON file: {exc}", path=path) from None
        except RecursionError:
            raise InputError("not a JSON file this reader takes: nested deeper than Python's recursion limit",
                             path=path) from None


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = None) -> None:
    """Write any JSON value atomically (temp file + rename; in an object store one PUT): a crash
    never leaves half a file."""
    target = location(path)
    payload = json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8")
    write_bytes(target, gzip.compress(payload, mtime=0) if target.suffix == ".gz" else payload)


def check_writable(folder: str | os.PathLike, probe_bytes: int = 1 << 20) -> None:
    """A local output folder can be made and written, with room for a small file (a read-only or
    full disk is named before any work; the probe goes to the folder's nearest existing parent,
    and leaves nothing); in an object store, the first write says."""
    if is_remote(folder):
        return
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # nothing is made on bad input
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".kddocre-write-check.") as f:
            f.write(b"\0" * probe_bytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise InputError(f"cannot write here ({e.strerror or e}): pick another --output-dir / output_dir",
                         path=folder) from None


def _default_mode() -> int:
    """Permissions a plain ``open()`` would give (temp files are created 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def rmtree(path: Location) -> None:
    """Remove a folder and everything in it; nothing if it is not there."""
    if isinstance(path, RemotePath):
        if path.exists():
            path.fs.delete_dir(path._path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def upload(local: Path, dest: Location) -> None:
    """Copy a local folder's files into `dest` (files of the same name are replaced)."""
    if isinstance(dest, RemotePath):
        pafs.copy_files(str(local), dest._path, destination_filesystem=dest.fs)
    else:
        shutil.copytree(local, dest, dirs_exist_ok=True)


@contextmanager
def on_disk(path: Location) -> Iterator[Path]:
    """A file as a local path for the duration of the block (a temporary copy of a remote one,
    under the same name, for APIs that only read local files such as MLflow's log_artifact)."""
    if not isinstance(path, RemotePath):
        yield path
        return
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / path.name
        local.write_bytes(path.read_bytes())
        yield local


def open_binary(path: str | os.PathLike | RemotePath):
    """A file's bytes as a stream, local or in an object store, for reading a block at a time."""
    path = location(path)
    return path.fs.open_input_stream(path._path) if isinstance(path, RemotePath) else open(path, "rb")


def sha256_file(path: str | os.PathLike | RemotePath) -> str:
    """The sha256 of a file's bytes (hex), local or in an object store, read a block at a time."""
    h = hashlib.sha256()
    with open_binary(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_under(folder: Location, names: list[str] | None = None) -> list[str]:
    """The files in `folder` (or in those of its entries named in `names`: files, folders,
    or glob patterns such as "plots/*.png"), as sorted paths relative to it."""
    folder = location(folder)
    if isinstance(folder, RemotePath):
        root = folder._path.rstrip("/") + "/"
        infos = folder.fs.get_file_info(pafs.FileSelector(folder._path, recursive=True, allow_not_found=True))
        every = [i.path[len(root):] for i in infos if i.type == pafs.FileType.File]
    else:
        every = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    if names is None:
        return sorted(every)
    return sorted(f for f in every if any(f == n or f.startswith(n.rstrip("/") + "/") or fnmatch.fnmatch(f, n)
                                          for n in names))


def file_record(folder: Location, files: list[str]) -> dict[str, dict]:
    """Size and sha256 of each of `files` (paths relative to `folder`), for a manifest to keep."""
    folder = location(folder)
    return {f: {"size": (folder / f).stat().st_size, "sha256": sha256_file(folder / f)} for f in files}


def check_files(folder: Location, record: dict[str, dict], digests: bool = False) -> list[tuple[str, str]]:
    """(file, what is wrong) for each file of a `file_record` that is missing or of another size
    now, and with `digests`, whose bytes differ; empty when all match. Sizes cost one listing,
    digests read every byte."""
    folder = location(folder)
    problems = []
    for name, want in sorted(record.items()):
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append((name, "names a file outside the folder: not a record this folder wrote"))
        elif not path.is_file():
            problems.append((name, "missing"))
        elif (size := path.stat().st_size) != want["size"]:
            problems.append((name, f"{size} bytes, but {want['size']} were written (truncated or replaced)"))
        elif digests and sha256_file(path) != want["sha256"]:
            problems.append((name, "its sha256 differs from the one recorded when it was written (edited or corrupt)"))
    return problems


def cache_dir(kind: str) -> Path:
    """This node's cache folder for one kind of thing (`remote` copies, an unpacked encoder):
    under KDDOCRE_CACHE, else ~/.cache/kddocre."""
    return Path(os.environ.get("KDDOCRE_CACHE", Path.home() / ".cache" / "kddocre")) / kind


def local_copy(folder: str | os.PathLike | RemotePath) -> Path:
    """A local folder with the files of `folder`: the folder itself if local, else a copy made once
    per node for each version of its files (the cache key digests the URI and every file's name,
    size and modification time, so a run folder rewritten by `--overwrite` is fetched again)."""
    folder = location(folder)
    if not isinstance(folder, RemotePath):
        return folder
    files = [i for i in folder.fs.get_file_info(pafs.FileSelector(folder._path, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File]
    if not files:
        raise FileNotFoundError(f"{folder}: no such folder")
    listing = sorted((i.path, i.size, str(i.mtime)) for i in files)
    digest = hashlib.sha256(repr((str(folder), listing)).encode()).hexdigest()[:16]
    target = cache_dir("remote") / f"{folder.name}-{digest}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:  # exactly the listed files, so the copy is the version the digest names
        root = folder._path.rstrip("/") + "/"
        for info in files:
            dest = tmp / info.path[len(root):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(info.path, str(dest), source_filesystem=folder.fs)
        try:
            os.replace(tmp, target)
        except OSError:  # another process on this node finished the same copy first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def parquet_files(folder: str | os.PathLike | RemotePath) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The Parquet files directly in a folder (not its manifest or other files), sorted by name,
    with the filesystem to open them: `pyarrow.dataset.dataset([i.path ...], filesystem=fs)`."""
    folder = location(folder)
    fs, root = (folder.fs, folder._path) if isinstance(folder, RemotePath) else (pafs.LocalFileSystem(), str(folder))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return fs, sorted((i for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")),
                      key=lambda i: i.path)
