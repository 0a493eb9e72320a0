"""Run-directory state that survives a kill at any moment: atomic writes, the run lock, verified checkpoints.

* `atomic_write`, `atomic_json`, `atomic_save`: every file of a run is written aside (a hidden temporary file in the
  same directory), flushed to disk, then renamed over its name (`os.replace`, atomic on POSIX and Windows). A reader
  sees the old file or the new one, never a part of one; a kill leaves at most a `.tmp-*` file, removed by the next
  process that takes the run's lock. They are also the one path by which a full, over-quota or read-only disk
  becomes a `DiskError` (which file, the space needed when known, no temporary file left), whatever the writer
  (h5py, zip, TensorFlow) raised; `disk_guarded` does the same for the files Keras callbacks keep open.
* `RunLock`: one process owns a run directory. The lock is an OS file lock (`fcntl.flock`) on `run.lock`, which the
  kernel drops when its process dies, so a dead process never holds a run; the file names the owner (pid, host,
  start time, command) for the message that refuses a second process, and for the note when a new owner finds the
  record of one that died.
* `RunCheckpoint`: the Keras callback that backs up the training state at the end of every epoch, like
  `keras.callbacks.BackupAndRestore`, and restores it at the start of `fit`; see its docstring for why it is not
  BackupAndRestore itself.
"""

import csv
import datetime
import errno
import functools
import glob
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sys
import time

import keras
import numpy as np

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid-based fallback below
    fcntl = None

TMP_PREFIX = ".tmp-"
LOCK = "run.lock"
#: errno values of a disk that cannot take a write: full, over quota, read-only, no permission.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
#: Room kept free beyond a file's estimated size before it is written (file system metadata, HDF5 headers).
SPACE_MARGIN = 64 * 1024


class DiskError(OSError):
    """A file of a run cannot be written: the disk is full, over quota or read-only, or permission is denied.

    An `OSError` with `errno`, `strerror` and `filename` set; `needed` and `free` (bytes) when the space was checked
    before writing. Raised by `atomic_save` (and so every atomic write) and by the callbacks `disk_guarded` wraps,
    before or instead of whatever the writer raised (h5py, zipfile, TensorFlow's `ResourceExhaustedError`); the
    temporary file is removed. `str(error)` is one line; the CLI adds what is still safe and exits with status 1.

    Args:
        code: the errno (`errno.ENOSPC`, `errno.EROFS`, ...).
        filename: the file that could not be written.
        needed: bytes the write needed, when known.
        free: bytes free on its disk, when known.

    Example:

    >>> import errno
    >>> from keras_okd.experiments.state import DiskError
    >>> print(DiskError(errno.ENOSPC, "run/backup/epoch_00003.weights.h5", needed=3 << 20, free=700 << 10))
    cannot write run/backup/epoch_00003.weights.h5: No space left on device (it needs about 3.0 MB, 0.7 MB are free)
    """

    def __init__(self, code, filename, needed=None, free=None):
        super().__init__(code, os.strerror(code), filename)
        self.needed, self.free = needed, free

    def __str__(self):
        space = ""
        if self.needed is not None and self.free is not None:
            space = f" (it needs about {self.needed / 2**20:.1f} MB, {self.free / 2**20:.1f} MB are free)"
        return f"cannot write {self.filename}: {self.strerror}{space}"


_DISK_MESSAGES = {code: os.strerror(code).lower() for code in DISK_ERRNOS}


def disk_errno(error):
    """The errno of a disk that cannot take a write behind `error` (its `errno`, or one named in its message or in
    those of its causes: h5py and TensorFlow report a full disk as text), or None.

    Example:

    >>> import errno
    >>> disk_errno(OSError(errno.EROFS, "Read-only file system")) == errno.EROFS
    True
    >>> disk_errno(RuntimeError("Can't write data (file write failed: errno = 28, No space left on device)"))
    28
    >>> disk_errno(ValueError("bad shape")) is None
    True
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            return error.errno
        text = str(error).lower()
        for code, message in _DISK_MESSAGES.items():
            if message in text or f"errno = {code}," in text:
                return code
        error = error.__cause__ or error.__context__
    return None


def check_space(path, needed):
    """Refuse to start writing `path` when its disk has fewer than `needed` + `SPACE_MARGIN` bytes free.

    Raises:
        DiskError: (ENOSPC) naming the file, the bytes needed and free.

    Example:

    >>> import tempfile
    >>> check_space(tempfile.mkdtemp() + "/small.json", 100)   # room for 100 bytes: nothing happens
    """
    if needed is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # pragma: no cover - a folder that vanished: the write itself reports it
        return
    if free < needed + SPACE_MARGIN:
        raise DiskError(errno.ENOSPC, str(path), needed=int(needed) + SPACE_MARGIN, free=free)


# ---------------------------------------------------------------------------------------------------- atomic writes
def _temporary(path):
    """A hidden temporary name next to `path` that keeps its file name (and so its extension)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{name}")


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder):
    if os.name != "posix":  # pragma: no cover - directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(save, path, needs=None):
    """Write `path` through `save(temporary_path)` (any writer: `model.save`, `save_weights`, ...), then flush it to
    disk and rename it over `path`. A kill at any moment leaves `path` as it was or complete. A full, over-quota or
    read-only disk, whatever the writer raised, is a `DiskError` naming `path`, with the temporary file removed.

    Args:
        save: a function that writes the whole file to the path it is given (the name keeps `path`'s extension).
        path: the file to write.
        needs: the file's estimated size in bytes: checked free (`check_space`) before writing starts, so a writer
            that handles a full disk badly (HDF5 can crash the process) is never started without room.

    Example:

    ```python
    atomic_save(model.save, "run/student_0.keras")
    ```
    """
    check_space(path, needs)
    temporary = _temporary(path)
    try:
        save(temporary)
        _fsync_file(temporary)
        os.replace(temporary, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException as error:
        try:
            if os.path.exists(temporary):
                os.remove(temporary)
        except OSError:  # pragma: no cover - a folder that cannot be written cannot hold the temporary either
            pass
        code = None if isinstance(error, DiskError) else disk_errno(error)
        if code is not None:
            raise DiskError(code, str(path)) from error
        raise


def atomic_write(path, data):
    """Write `data` (str or bytes) to `path` atomically (see `atomic_save`)."""
    mode = "wb" if isinstance(data, bytes) else "w"

    def save(temporary):
        with open(temporary, mode) as f:
            f.write(data)

    atomic_save(save, path, needs=len(data.encode() if isinstance(data, str) else data))


def atomic_json(path, value):
    """Write `value` as indented JSON to `path` atomically."""
    atomic_write(path, json.dumps(value, indent=2) + "\n")


def disk_guarded(callback, path):
    """`callback` (a Keras callback that writes `path` itself: `CSVLogger`, `TensorBoard`) with its hooks turning
    a full, over-quota or read-only disk into a `DiskError` naming `path` (TensorFlow's summary writer raises
    `ResourceExhaustedError`, a plain file `OSError` without its name).

    Args:
        callback: the callback; changed in place (its `on_*` methods) and returned.
        path: the file or folder it writes, for the message.

    Example:

    ```python
    callbacks = [disk_guarded(keras.callbacks.CSVLogger("run/history.csv", append=True), "run/history.csv")]
    ```
    """
    for name in dir(type(callback)):  # the hooks the callback defines (the base class's do nothing)
        base = getattr(keras.callbacks.Callback, name, None)
        if name.startswith("on_") and getattr(type(callback), name) is not base:
            setattr(callback, name, _guarded_hook(getattr(callback, name), str(path)))
    return callback


def _guarded_hook(hook, path):
    @functools.wraps(hook)
    def guarded(*args, **kwargs):
        try:
            return hook(*args, **kwargs)
        except DiskError:
            raise
        except Exception as error:
            code = disk_errno(error)
            if code is None:
                raise
            raise DiskError(code, path) from error

    return guarded


def remove_temporaries(*folders):
    """Delete the `.tmp-*` files that killed writers left in `folders` (only while holding the run's lock: another
    process's temporaries would be in use); returns their names."""
    removed = []
    for folder in folders:
        for path in glob.glob(os.path.join(folder, TMP_PREFIX + "*")):
            if os.path.isfile(path):
                os.remove(path)
                removed.append(os.path.basename(path))
    return removed


def sha256(path, chunk=1 << 22):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path):
    """`(value, None)` from a JSON file, or `(None, problem)` when it is missing or damaged."""
    try:
        with open(path) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, ValueError) as error:
        return None, f"{path} is damaged ({type(error).__name__}: {error})"


# ---------------------------------------------------------------------------------------------------------- lock
class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (it holds a run of another config, is a file, or its results are
    damaged); the message says what to do.

    A subclass of `ValueError`, raised by `run_experiment` before it writes anything; the CLI prints the message and
    exits with status 2. Pass another run directory, or delete the old one to start over.

    Example:

    >>> import os, tempfile
    >>> from keras_okd.experiments import RunDirectoryError, config_from_dict, run_experiment
    >>> config = config_from_dict({"experiment": "quick", "method": {"name": "dml"},
    ...                            "students": ["simple_cnn", "simple_cnn"], "dataset": {"name": "digits"},
    ...                            "optimizer": {"name": "sgd", "learning_rate": 0.05}, "epochs": 2})
    >>> not_a_directory = os.path.join(tempfile.mkdtemp(), "a_file")
    >>> open(not_a_directory, "w").close()
    >>> try:
    ...     run_experiment(config, not_a_directory, seed=0)
    ... except RunDirectoryError as error:
    ...     print(str(error).endswith("is a file, not a run directory: pass another --run-dir."))
    True
    """


class RunLockedError(RunDirectoryError):
    """Another live process owns the run directory; the message names it.

    A subclass of `RunDirectoryError`, raised by `RunLock.acquire` (and so by `run_experiment`) when another process
    trains in the directory: wait for it to finish, or stop it; a lock left by a killed process is taken over
    without an error.

    Example:

    >>> import tempfile
    >>> from keras_okd.experiments import RunLock, RunLockedError
    >>> run_dir = tempfile.mkdtemp()
    >>> with RunLock(run_dir):
    ...     try:
    ...         RunLock(run_dir).acquire()   # a second owner, as another process would be
    ...     except RunLockedError as error:
    ...         print("in use by process" in str(error))
    True
    """


class ResumeMismatchError(RunDirectoryError):
    """The run directory's backup was written by another setup (another resolved config, backend, Keras or engine
    version) than the one asked to resume it; the message names each difference and how to start a new run.

    A subclass of `RunDirectoryError`, raised by `RunCheckpoint.check_resume` (and so by `run_experiment`, before
    anything is loaded or written) and by `RunCheckpoint.on_train_begin`: a resume continues only the run that wrote
    the backup, since a resumed run is meant to end as the uninterrupted one would, and half a run of one setup
    followed by half of another is neither. The CLI prints the message and exits with status 2.

    Example:

    ```python
    try:
        run_experiment(config_with_another_learning_rate, "runs/x/seed_0", seed=0)
    except ResumeMismatchError as error:
        print(error)   # "... optimizer.learning_rate: 0.05 in the backup, 0.5 now ... pass another --run-dir ..."
    ```
    """


def setup_versions():
    """What a run's exactness depends on besides its config: `{"backend", "keras", "<engine>"}` versions.

    Example:

    >>> import keras
    >>> from keras_okd.experiments.state import setup_versions
    >>> versions = setup_versions()
    >>> versions["keras"] == keras.__version__ and versions["backend"] in versions
    True
    """
    backend = keras.backend.backend()
    engine = sys.modules.get({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend))
    return {"backend": backend, "keras": keras.__version__,
            backend: getattr(engine, "__version__", None) if engine is not None else None}


def setup_differences(saved, current):
    """`["key: A in the backup, B now", ...]` between two setups `{"config": {...}, "versions": {...}}` (a backup
    record's and this process's); keys missing from `saved` (records written before they were recorded) are not
    compared.

    Example:

    >>> from keras_okd.experiments.state import setup_differences
    >>> setup_differences({"config": {"epochs": 8, "optimizer": {"learning_rate": 0.05}}},
    ...                   {"config": {"epochs": 8, "optimizer": {"learning_rate": 0.5}}})
    ['optimizer.learning_rate: 0.05 in the backup, 0.5 now']
    """
    from keras_okd.experiments.config import config_differences

    out = []
    for section in ("versions", "config"):
        old, new = (saved or {}).get(section), (current or {}).get(section)
        if old is None or new is None:
            continue
        new = json.loads(json.dumps(new))  # compared as the record stores it (tuples as lists)
        for key in config_differences(old, new):
            a, b = _at(old, key), _at(new, key)
            out.append(f"{'version of ' if section == 'versions' else ''}{key}: {_short(a)} in the backup, "
                       f"{_short(b)} now")
    return out


def _at(value, dotted):
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part, "(not set)")
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return "(not set)"
    return value


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _process_start(pid):
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _alive(owner):
    """Whether the process an owner record names still runs (same host only; other hosts count as alive)."""
    if owner.get("host") != socket.gethostname():
        return True
    if owner.get("boot_id") and owner.get("boot_id") != _boot_id():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = owner.get("process_start")
    return start is None or _process_start(pid) in (None, start)


def describe_owner(owner):
    """`process 123 on host h (started 2025-01-01 10:00:00: keras-okd train ...)`."""
    command = owner.get("command") or "?"
    return (f"process {owner.get('pid')} on host {owner.get('host')} (started {owner.get('started')}: "
            f"{command[:160]})")


class RunLock:
    """Exclusive ownership of a run directory by one process.

    `acquire` takes an OS lock (`fcntl.flock`) on `<run_dir>/run.lock` and writes the owner record into it; the
    kernel releases the lock when the process ends, however it ends, so a dead process never holds a run. A second
    process is refused with `RunLockedError` naming the owner. Finding the record of an owner that died without
    releasing (killed) is fine: the new owner takes over and `acquire` returns a note saying so. Where `fcntl` does not
    exist, the record alone is the lock: an owner whose process is gone (same host, pid and start time checked) is
    taken over the same way.

    Keras has nothing like it: `keras.callbacks.BackupAndRestore` takes no lock, so two processes started on one
    backup directory would overwrite each other's backups; tests/experiments/test_reliability.py
    (`test_training_in_a_directory_another_process_owns_is_refused`) shows the second one refused here instead.

    Args:
        run_dir: the run directory.

    Example:

    ```python
    with RunLock("runs/x") as lock:
        print(lock.note or "mine")
    ```
    """

    def __init__(self, run_dir):
        self.path = os.path.join(str(run_dir), LOCK)
        self.fd = None
        self.note = None

    def owner(self):
        """The owner record in the lock file, or {} when empty or unreadable."""
        try:
            with open(self.path) as f:
                value = json.load(f)
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self):
        """Take the lock; returns a note when a dead owner's record was taken over, else None.

        Raises:
            RunLockedError: a live process owns the directory.
        """
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise RunLockedError(self._refusal(self.owner())) from None
            previous = self.owner()
            if previous and fcntl is None and _alive(previous):  # pragma: no cover - no OS lock
                raise RunLockedError(self._refusal(previous))
            if previous and not previous.get("released"):
                self.note = (f"note: {os.path.dirname(self.path)} was owned by {describe_owner(previous)}, which "
                             "ended without releasing it (killed?); this process takes it over.")
            record = {
                "pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
                "process_start": _process_start(os.getpid()),
                "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
                "command": " ".join(sys.argv),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self.note

    def _refusal(self, owner):
        who = describe_owner(owner) if owner else "another process (its record is not written yet)"
        return (f"{os.path.dirname(self.path)} is in use by {who}. Wait for it to finish or stop it; two trainings "
                "on one run directory would overwrite each other's state. If that process is gone and this message "
                f"persists, delete {self.path}.")

    def release(self):
        """Mark the record released and drop the lock."""
        if self.fd is None:
            return
        try:
            record = self.owner()
            record["released"] = True
            data = (json.dumps(record) + "\n").encode()
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError:  # pragma: no cover - a vanished directory: nothing left to mark
            pass
        finally:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------------------------------------------------- history
def history_text(rows):
    """`history.csv` text of `rows` (dicts with `epoch` and the logged values), byte for byte what
    `keras.callbacks.CSVLogger` writes for them: columns `epoch` then the sorted log names."""
    if not rows:
        return ""
    keys = sorted(k for k in rows[0] if k != "epoch")
    if keys and not any(k.startswith("val_") for k in keys):
        keys += [f"val_{k}" for k in keys]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch"] + keys, dialect=csv.excel)
    writer.writeheader()
    for row in rows:
        writer.writerow({"epoch": row["epoch"], **{k: row.get(k, "NA") for k in keys}})
    return out.getvalue()


def read_history_rows(path):
    """`(rows, problems)`: the complete rows of a `history.csv` as dicts of floats (epoch as int), one per epoch
    in order, and a list of what was skipped (a second header, a row cut short, a line of bytes that are not text
    or not a row, a repeated epoch keeps its last row). Never raises on the file's content.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"epoch,loss\\r\\n0,2.5\\r\\n\\xff\\xfe garbage\\r\\n1,1.5\\r\\n")
    >>> rows, problems = read_history_rows(path)
    >>> [(row["epoch"], row["loss"]) for row in rows], problems[0].endswith("bytes that are not text; ignored")
    ([(0, 2.5), (1, 1.5)], True)
    """
    rows, problems, _ = _read_history(path)
    return rows, problems


def _read_history(path):
    """`read_history_rows`, and whether the file is damaged beyond a last row cut short by a kill."""
    problems = []
    damaged = False
    if not os.path.exists(path):
        return [], problems, damaged
    with open(path, "rb") as f:
        data = f.read()
    lines = data.splitlines(keepends=True)
    if lines and not lines[-1].endswith((b"\n", b"\r")):
        problems.append(f"{path}: its last line is cut short (a write was interrupted); ignored")
        lines = lines[:-1]
    header = None
    rows = {}
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
            fields = next(csv.reader([line]), [])
        except (UnicodeDecodeError, csv.Error):
            problems.append(f"{path}:{number}: bytes that are not text; ignored")
            damaged = True
            continue
        if not fields:
            continue
        if header is None:
            header = fields
            if "epoch" not in header:
                problems.append(f"{path}: line {number} is not a history header; the file is ignored")
                return [], problems, True
            continue
        if fields == header:
            problems.append(f"{path}:{number}: a second header (two sessions appended); ignored")
            continue
        if len(fields) != len(header):
            problems.append(f"{path}:{number}: {len(fields)} fields where the header has {len(header)}; ignored")
            damaged = True
            continue
        parsed = {}
        for key, value in zip(header, fields):
            try:
                parsed[key] = float(value)
            except ValueError:
                parsed[key] = value
        try:
            parsed["epoch"] = int(parsed["epoch"])
        except (TypeError, ValueError, OverflowError):
            problems.append(f"{path}:{number}: epoch {_short(parsed['epoch'])} is not a number; ignored")
            damaged = True
            continue
        rows[parsed["epoch"]] = parsed
    return [rows[e] for e in sorted(rows)], problems, damaged


def move_aside(path, suffix="damaged"):
    """Rename a damaged file to `<path>.<suffix>` (`.<suffix>-2`, ... when taken), keeping it for inspection;
    returns the new name.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> open(path, "w").close()
    >>> os.path.basename(move_aside(path)), os.path.exists(path)
    ('history.csv.damaged', False)
    """
    target, n = f"{path}.{suffix}", 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.{suffix}-{n}"
    os.replace(path, target)
    return target


# ---------------------------------------------------------------------------------------------------------- checkpoint
_CHECKPOINT = re.compile(r"^epoch_(\d+)\.json$")


class RunCheckpoint(keras.callbacks.Callback):
    """Back up the training state after every epoch and restore the newest intact backup when `fit` starts.

    What `keras.callbacks.BackupAndRestore` does, made safe against a kill at any moment. BackupAndRestore
    (`double_checkpoint=True` included) overwrites `latest.weights.h5` in place and then `training_metadata.json`:
    killed during the weights write it leaves a damaged file (without the double checkpoint every rerun then fails
    with `OSError: file signature not found`); killed between the two writes it resumes the newer weights under the
    older epoch number and trains that epoch twice, silently; killed during the metadata write it fails every rerun
    with a JSON error. Here each backup is a pair of new files, written aside and renamed into place, weights first:

        backup/epoch_{k}.weights.h5   every variable of the model after k epochs (`save_weights`)
        backup/epoch_{k}.json         k, the SHA-256 and size of the weights file, the history rows of epochs 0..k-1,
                                      the training seconds so far; written last: it makes backup k exist

    With `every_seconds > 0` an epoch is backed up only once that much training time has passed since the last
    backup, and the last epoch of `fit` always is: a kill then loses at most about `every_seconds` of training, and a
    run of short epochs does not spend a large share of its time writing backups (each is a `save_weights` of every
    variable: for two small CNNs, 74 ms on this project's idle CPU against epochs of 0.57 s on 1,000 images,
    benchmarks/bench_backup.py). A resume
    from an earlier backup retrains the epochs after it exactly as they ran, so the results do not depend on it.
    The two newest backups are kept, so the previous good one stays until the new one is complete. Each record also
    holds the run's setup (`config`, and `setup_versions()`: backend, Keras and engine versions); a backup of another
    setup is never resumed (`ResumeMismatchError`, naming what differs; `check_resume` asks before `fit`). At `fit`
    start the newest backup whose record reads and whose weights match the recorded hash (and load) is restored: every
    variable `save_weights` stores (students, optimizer, bank and counts, teacher, schedules, any layer's
    `add_weight` state; not the state of Keras's `SeedGenerator`s, which `save_weights` skips) and the epoch (`fit`
    continues with epoch k). A backup is applied whole or not at all: when its weights fail to load part-way, every
    variable is put back as it was before the load. A damaged backup is reported on stderr at every verbosity and the
    previous one used. The run's history is
    rewritten from the backup's rows, so `history.csv` holds exactly epochs 0..k-1 again (a row cut short or a row
    of an epoch that was not backed up is dropped) before `keras.callbacks.CSVLogger` appends to it; list this
    callback before CSVLogger. The Keras BackupAndRestore files of runs made before this (`latest.weights.h5`,
    `training_metadata.json`) are restored too when nothing newer is there. What Keras's callback lacks is shown by
    tests/experiments/test_reliability.py: `test_keras_backup_metadata_cut_short_fails_every_rerun_but_not_here`
    (BackupAndRestore fails every rerun on a cut metadata file) and
    `test_a_kill_between_a_backups_weights_and_its_record`.

    Args:
        backup_dir: where the backups go.
        history_path: the run's `history.csv` (rewritten on restore), or None.
        progress_path: a JSON file kept with `{"epochs", "seconds"}` after every backup, or None.
        keep: how many backups to keep (>= 2 keeps the previous one while the next is written).
        verbose: print what was restored (damage and fallbacks are warnings, printed to stderr at every verbosity).
        config: the run's resolved config (JSON-able), recorded with each backup; a backup recorded with another
            config is not resumed (None: not recorded nor compared).
        every_seconds: back up an epoch only when at least this many seconds of training have passed since the last
            backup (the last epoch of `fit` always): 0 backs up every epoch.

    Example:

    ```python
    distiller.fit(train, epochs=240, callbacks=[RunCheckpoint("run/backup", "run/history.csv"),
                                                keras.callbacks.CSVLogger("run/history.csv", append=True)])
    ```
    """

    def __init__(self, backup_dir, history_path=None, progress_path=None, keep=2, verbose=1, config=None,
                 every_seconds=0.0):
        super().__init__()
        if int(keep) < 1:
            raise ValueError(f"RunCheckpoint: keep must be >= 1, got {keep}.")
        every_seconds = float(every_seconds)
        if not every_seconds >= 0 or every_seconds == float("inf"):
            raise ValueError(f"RunCheckpoint: every_seconds must be a finite number >= 0 (0: a backup after every "
                             f"epoch), got {every_seconds}.")
        self.every_seconds = every_seconds
        self.backup_dir = str(backup_dir)
        self.history_path = history_path
        self.progress_path = progress_path
        self.keep = int(keep)
        self.verbose = verbose
        self.config = config
        self.rows = []
        self.seconds = 0.0
        self.restored = None
        self.problems = []
        self._epoch_start = None
        self._saved_seconds = 0.0

    # ------------------------------------------------------------------ finding backups
    def _weights_path(self, epoch):
        return os.path.join(self.backup_dir, f"epoch_{epoch:05d}.weights.h5")

    def _record_path(self, epoch):
        return os.path.join(self.backup_dir, f"epoch_{epoch:05d}.json")

    def candidates(self):
        """Intact backups, newest first, as records `{"epoch", "rows", "seconds", "weights": path}`; damaged ones
        are listed in `self.problems`."""
        self.problems = []
        found = []
        for path in glob.glob(os.path.join(self.backup_dir, "epoch_*.json")):
            match = _CHECKPOINT.match(os.path.basename(path))
            if not match:
                continue
            record, problem = read_json(path)
            if problem or not isinstance(record, dict) or record.get("epoch") != int(match.group(1)):
                self.problems.append(problem or f"{path} does not hold a backup record")
                continue
            weights = self._weights_path(record["epoch"])
            if not os.path.exists(weights):
                self.problems.append(f"{weights} is missing")
                continue
            if os.path.getsize(weights) != record.get("size") or sha256(weights) != record.get("sha256"):
                self.problems.append(f"{weights} is damaged (its size or SHA-256 differs from {path})")
                continue
            found.append({**record, "weights": weights})
        found.sort(key=lambda r: r["epoch"], reverse=True)
        found += self._legacy()
        return found

    def _legacy(self):
        """The backup of Keras's BackupAndRestore, from runs made before RunCheckpoint (no hash to check)."""
        weights = os.path.join(self.backup_dir, "latest.weights.h5")
        meta = os.path.join(self.backup_dir, "training_metadata.json")
        out = []
        for w, m in ((weights, meta), (weights + ".bkp", meta + ".bkp")):
            if os.path.exists(w) and os.path.exists(m):
                record, problem = read_json(m)
                if problem or not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                    self.problems.append(problem or f"{m} does not hold an epoch")
                    continue
                out.append({"epoch": record["epoch"], "rows": None, "seconds": None, "weights": w, "legacy": True})
        return out

    def latest_epoch(self):
        """The epoch count of the newest intact backup (0 when none): what `fit` will continue from."""
        found = self.candidates()
        return found[0]["epoch"] if found else 0

    def setup(self):
        """This process's setup as a backup records it: `{"config": ..., "versions": setup_versions()}`."""
        return {"config": self.config, "versions": setup_versions()}

    def check_resume(self, found=None):
        """Refuse to resume a backup written by another setup.

        Args:
            found: `candidates()` (None: read them now).

        Raises:
            ResumeMismatchError: the newest intact backup's recorded config or versions differ from this process's;
                the message lists each difference and how to start a new run instead.
        """
        found = self.candidates() if found is None else found
        if not found or found[0].get("legacy"):
            return
        record = found[0]
        saved = record.get("setup") or {"versions": {k: v for k, v in (("backend", record.get("backend")),
                                                                       ("keras", record.get("keras_version")))
                                                     if v is not None}}
        current = self.setup()
        current["versions"] = {k: current["versions"].get(k) for k in (saved.get("versions") or {})}
        differences = setup_differences(saved, current)
        if differences:
            run_dir = os.path.dirname(os.path.abspath(self.backup_dir))
            raise ResumeMismatchError(
                f"{run_dir} holds a run whose backup after epoch {record['epoch']} was written with another setup: "
                + "; ".join(differences) + ". A resume continues only the run that wrote the backup (half a run of "
                "one setup and half of another is neither), so it is not resumed with this one. To continue that "
                f"run, rerun it with its own setup (recorded under 'setup' in {self._record_path(record['epoch'])}); "
                "to train this setup, pass another --run-dir (a new run), or delete the directory to start over."
            )

    # ------------------------------------------------------------------ restore
    def on_train_begin(self, logs=None):
        self.restored = None
        for path in (self.history_path, self.progress_path):
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        candidates = self.candidates()
        self.check_resume(candidates)
        for record in candidates:
            try:
                self._load(record["weights"])
            except Exception as error:  # a file that passed its hash but does not load: try the previous backup
                message = " ".join(str(error).split())
                self.problems.append(f"{record['weights']} does not load ({type(error).__name__}: "
                                     f"{message[:300]}); nothing of it was applied")
                continue
            self.restored = record
            break
        if self.problems:  # damage and fallbacks are warnings, shown at every verbosity
            fallback = (f"restored the backup after epoch {self.restored['epoch']}" if self.restored
                        else "no intact backup is left: training starts again from epoch 1")
            print("warning: " + "; ".join(self.problems) + f"; {fallback}.", file=sys.stderr)
        epoch = self.restored["epoch"] if self.restored else 0
        self.model._initial_epoch = epoch or None
        existing = []
        if self.history_path:
            existing, found, damaged = _read_history(self.history_path)
            if damaged:  # keep the damaged file for inspection; the history is rebuilt below
                aside = move_aside(self.history_path)
                print(f"warning: {self.history_path} is damaged ({'; '.join(found)[:600]}); moved aside to {aside}; "
                      "the history is rebuilt from the " + ("backup." if self.restored else "rows that read."),
                      file=sys.stderr)
        if self.restored and self.restored.get("rows") is not None:
            self.rows = list(self.restored["rows"])
            self.seconds = float(self.restored.get("seconds") or 0.0)
        else:  # nothing restored, or a legacy backup without rows: keep the history's rows before the epoch
            self.rows = [r for r in existing if r["epoch"] < epoch]
            self.seconds = 0.0
        self._saved_seconds = self.seconds
        if self.history_path and (os.path.exists(self.history_path) or self.rows):
            text = history_text(self.rows)
            current = None
            if os.path.exists(self.history_path):
                with open(self.history_path, "rb") as f:
                    current = f.read()
            if current != text.encode():
                atomic_write(self.history_path, text)
        self._write_progress()

    def _load(self, weights):
        if not self.model.built:
            raise ValueError("RunCheckpoint: the model must be built before fit (Keras builds it from the data).")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        variables = _state_variables(self.model)
        before = [keras.ops.convert_to_numpy(v.value).copy() for v in variables]
        try:
            self.model.load_weights(weights)
        except BaseException:  # a load that failed part-way: put every variable back, so nothing of it is applied
            for variable, value in zip(variables, before):
                variable.assign(value)
            raise

    # ------------------------------------------------------------------ back up
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_start is not None:
            self.seconds += time.time() - self._epoch_start
        row = {"epoch": int(epoch), **{k: _plain_value(v) for k, v in (logs or {}).items()}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        last = epoch + 1 >= int((self.params or {}).get("epochs") or 0)
        if last or self.seconds - self._saved_seconds >= self.every_seconds:
            self.save(epoch + 1)

    def save(self, epoch):
        """Write backup `epoch` (weights, then the record that makes it exist) and drop the older ones."""
        try:
            os.makedirs(self.backup_dir, exist_ok=True)
        except OSError as error:
            if disk_errno(error) is None:
                raise
            raise DiskError(disk_errno(error), self.backup_dir) from error
        weights = self._weights_path(epoch)
        # Room for the new backup while the previous ones stay: they are deleted only once it is complete.
        atomic_save(lambda path: self.model.save_weights(path), weights, needs=self._estimated_size())
        record = {"epoch": int(epoch), "sha256": sha256(weights), "size": os.path.getsize(weights),
                  "seconds": round(self.seconds, 3), "rows": self.rows, "backend": keras.backend.backend(),
                  "keras_version": keras.__version__, "setup": self.setup()}
        atomic_json(self._record_path(epoch), record)
        self._saved_seconds = self.seconds
        self._write_progress()
        self._prune(epoch)

    def _estimated_size(self):
        """The bytes the next weights file needs: the largest of the backups' sizes and an estimate from the
        variables (their bytes and HDF5's few KB per dataset and group; a TSB run of two simple CNNs on the digits:
        74 variables, 466 KB of values, a 737 KB file, estimated 769 KB)."""
        sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(self.backup_dir, "epoch_*.weights.h5"))]
        variables = _state_variables(self.model)
        raw = sum(int(np.prod(v.shape)) * _itemsize(v.dtype) for v in variables) + _HDF5_OVERHEAD * len(variables)
        return max(sizes + [raw])

    def _prune(self, newest):
        kept = sorted((int(m.group(1)) for m in (_CHECKPOINT.match(os.path.basename(p)) for p in
                                                 glob.glob(os.path.join(self.backup_dir, "epoch_*.json"))) if m),
                      reverse=True)
        for epoch in kept[self.keep:]:
            for path in (self._record_path(epoch), self._weights_path(epoch)):  # the record first: then it is gone
                if os.path.exists(path):
                    os.remove(path)
        for name in ("latest.weights.h5", "training_metadata.json", "latest.weights.h5.bkp",
                     "training_metadata.json.bkp"):
            path = os.path.join(self.backup_dir, name)
            if os.path.exists(path):
                os.remove(path)

    def _write_progress(self):
        if self.progress_path:
            atomic_json(self.progress_path, {"epochs": len(self.rows), "seconds": round(self.seconds, 3)})


def _state_variables(model):
    """Every variable `load_weights` can write: the model's (layers, metrics) and its optimizer's, each once."""
    seen, out = set(), []
    optimizer = getattr(model, "optimizer", None)
    for variable in [*model.variables, *getattr(model, "metrics_variables", []),
                     *(optimizer.variables if optimizer is not None else [])]:
        if id(variable) not in seen:
            seen.add(id(variable))
            out.append(variable)
    return out


#: Bytes an HDF5 weights file spends per variable beyond its values (measured: 3.7 KB, see `_estimated_size`).
_HDF5_OVERHEAD = 4096


def _itemsize(dtype):
    try:
        return np.dtype(keras.backend.standardize_dtype(dtype)).itemsize
    except TypeError:  # bfloat16 and the like, unknown to numpy
        return 4


def _plain_value(value):
    """A log value as a JSON-able Python value (floats stay exact: CSVLogger writes `str(float)`)."""
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        elif isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return value
