"""onnxruntime sessions made the way the rest of the pipeline runs its models.

One session serves every thread (``run`` is thread-safe): the pipeline's workers each embed their
own photo, so the cores are used across photos as with the TFLite interpreters. Its own thread
pool follows ``LOOKALIKE_THREADS`` (0: one thread, like each TFLite interpreter), and its threads
do not spin while idle, so they leave the cores to decoding when there is no work.
"""

from __future__ import annotations

from pathlib import Path

from lookalike.models.files import ModelFileError


def make_session(path: Path, threads: int = 0):
    """An onnxruntime CPU session for ``path``; a file it cannot parse is a clear ModelFileError."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # a core dependency, but a broken install should say what is missing
        raise ModelFileError("ONNX models need the onnxruntime package: pip install onnxruntime") from exc

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 1  # 0: one per session, like each TFLite interpreter
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelFileError(f"{path} is not a model onnxruntime can load: {str(exc).strip()[:300]}") from exc
