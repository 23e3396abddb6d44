"""Writes of results files that either complete or leave the previous file intact.

Every file of a results folder is written to a temporary file in the same folder
and ``os.replace``-d over the target (atomic on POSIX), so a full disk, a
read-only folder or a kill mid-write never leaves a truncated file behind. Keras
and h5py files are first serialised into a scratch folder on the system temp
disk (h5py on a full disk prints HDF5 diagnostics and can crash the process) and
then copied with plain Python I/O, whose failures are ordinary ``OSError``\\ s.

A failure raises :class:`WriteError` naming the target path and the cause.
"""

import errno as errno_lib
import json
import os
import shutil
import tempfile


_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(OSError):
    """A results file could not be written: ``filename`` is the target path,
    ``strerror`` the cause; ``note`` says what was kept."""

    def __init__(self, path, cause, note=""):
        code = getattr(cause, "errno", None) or errno_lib.EIO
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(code, reason, os.fspath(path))
        self.note = note

    def __str__(self):
        note = f"; {self.note}" if self.note else ""
        return f"cannot write {self.filename}: {self.strerror}{note}"


def _remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def atomic_write(path, write):
    """Calls ``write(handle)`` on a binary temporary file beside ``path``, flushes
    and fsyncs it, then renames it over ``path``. On any failure the temporary
    file is removed, ``path`` is unchanged and :class:`WriteError` is raised."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                       suffix=".tmp", dir=folder)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a results file is 0644
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise WriteError(path, error) from None
    finally:
        if tmp is not None:
            _remove_quietly(tmp)


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path, value, sort_keys=True):
    write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys))


def copy_file(source, path):
    """Copies ``source`` to ``path`` atomically (see :func:`atomic_write`)."""
    def write(f):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
    atomic_write(path, write)


def save_via_scratch(path, save):
    """``save(scratch_path)`` writes the file (Keras ``save`` / ``save_weights``;
    the scratch path has the same file name, which Keras checks) on the system
    temp disk; the result is then copied atomically to ``path``."""
    path = os.fspath(path)
    scratch = tempfile.mkdtemp(prefix="nc_ssl_save_")
    try:
        target = os.path.join(scratch, os.path.basename(path))
        try:
            save(target)
        except OSError as error:  # the scratch disk itself
            raise WriteError(target, error) from None
        copy_file(target, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_writable(path):
    """Raises :class:`WriteError` when the folder ``path`` could not be created or
    written: checks its nearest existing ancestor (a read-only filesystem, missing
    permissions, a file in the way) without writing anything there."""
    path = os.path.abspath(os.fspath(path))
    probe = path
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise WriteError(path, OSError(errno_lib.ENOTDIR,
                                       f"{probe} is not a folder"))
    if not os.access(probe, os.W_OK | os.X_OK):
        # access(2) fails with EROFS on a read-only mount (also for root), EACCES
        # for missing permissions.
        code = errno_lib.EROFS if _read_only(probe) else errno_lib.EACCES
        raise WriteError(path, OSError(code, os.strerror(code)))


def _read_only(folder):
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
