"""Atomic checkpoints of a training run: model, optimiser state, iteration, configuration.

A checkpoint is an .npz file written to a temporary file in the same folder,
fsync'ed, then renamed over the target, so a crash mid-write leaves the
previous checkpoint intact. Its configuration (data fingerprint, scheme,
n_workers, ...) must match the run that resumes from it.
"""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = 1


def data_fingerprint(X, y):
    """A short hash of a CSR matrix and its labels: resuming on other data is refused."""
    digest = hashlib.sha256()
    digest.update(np.asarray(X.shape, dtype=np.int64).tobytes())
    for array in (X.indptr, X.indices, X.data, y):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def save(path, *, iteration, optimizer_state, config):
    """Write atomically: the checkpoint after `iteration` completed iterations."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    arrays = {f"state_{key}": np.asarray(value) for key, value in optimizer_state.items()}
    handle, temporary = tempfile.mkstemp(prefix=".gc_fast-ckpt-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, format=np.int64(FORMAT), iteration=np.int64(iteration),
                     config=np.array(json.dumps(config, sort_keys=True)), **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes it private; a checkpoint is a normal file
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path, *, expected_config):
    """(iteration, optimizer_state, config); ValueError if unreadable or from another run."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if int(archive["format"]) != FORMAT:
                raise ValueError(f"{path}: checkpoint format {int(archive['format'])}, "
                                 f"expected {FORMAT}")
            iteration = int(archive["iteration"])
            config = json.loads(str(archive["config"]))
            state = {key[len("state_"):]: archive[key] for key in archive.files
                     if key.startswith("state_")}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such checkpoint file") from None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if str(error).startswith(path):
            raise
        raise ValueError(f"{path}: not a readable gc_fast checkpoint ({error})") from None
    differences = [f"{key}: checkpoint has {config.get(key)!r}, this run {value!r}"
                   for key, value in expected_config.items() if config.get(key) != value]
    if differences:
        raise ValueError(f"{path} is from a different configuration ({'; '.join(differences)}); "
                         "resume with the same data, scheme and workers, or start afresh")
    if "n_steps" in state:
        state["n_steps"] = int(state["n_steps"])
    return iteration, state, config
