"""Storage-update certification: a memory of certified balls that later certificates are trimmed against.

Each certified input leaves a ball ``(x_j, c_j, R_j, sigma_j)``. A new certificate ``(x, c, R)`` is compared with the
stored balls of *other* labels (same-label overlaps are left alone). With ``g_j = ||x - x_j|| - R_j``:

* ``x`` inside a stored ball (``g_j < 0``): the answer becomes that ball's label ``c_j`` with radius
  ``R_j - ||x - x_j||`` (the ball with the smallest ``g_j`` decides);
* otherwise, if a stored ball overlaps (``g_j < R``): the radius shrinks to ``min_j g_j``, so the balls touch;
* otherwise nothing changes.

Each region also holds a conservative radius ``Rc_j <= R_j`` (the radius with ``min(sigma_x, min_i sigma_i)``, see the
guarantees page). The decisions (relabel, trim) are made with the paper radii as above; the conservative radius
follows them: relabelled into ball ``j`` it becomes ``max(0, Rc_j - ||x - x_j||)`` (the ball of that radius lies
inside ``j``'s conservative ball), trimmed outside it becomes ``min(Rc, min_j g_j)`` (then it cannot reach any
other-label ball, conservative or not, since ``Rc_j <= R_j``), and otherwise it is kept. Every result keeps
``Rc <= R``.

Stored balls never change, so the invariant "no two stored balls with different labels overlap" holds after every
step, for the paper balls and for the conservative balls alike. Inputs are processed in order, each against
everything stored before it (earlier items of the same batch included). Abstentions (``pred == -1``) pass through
unchanged and are not stored; neither are results whose radius is 0 after trimming (they certify nothing). A
relabelled result is stored with its new label and radii and the query's own sigma.

Distances (:mod:`art_certssbd._distances`): the stored balls are scanned in chunks with the fast matrix-product form
``sqrt(|x|^2 + |x_j|^2 - 2 x.x_j)``; every pair within that form's worst-case rounding error of the minimum is then
recomputed directly, so the decisions are those of exact float64 distances. Storage is float64 (10^5 regions of 784
features take 630 MB).

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD); DDRS memory: https://arxiv.org/abs/2107.04570
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile

import numpy as np
import torch

from art_certssbd._distances import any_overlap, exact_dist, nearest_conflict
from art_certssbd._io import atomic_open
from art_certssbd.result import CertificationResult
from art_certssbd.stats import ABSTAIN

logger = logging.getLogger(__name__)

_FORMAT = "art-certssbd/certification-memory"
_FORMAT_VERSION = 2  # 2 added radii_conservative; version-1 files load with conservative radii 0 (unknown)
_ARRAYS = ("centers", "labels", "radii", "radii_conservative", "sigmas")
_FIELDS = ("format", "format_version", *_ARRAYS)
_BLOCK = 256  # queries per block: one cdist pass over the store, then in-order processing inside the block


def apply_memory(
    memory: CertificationMemory | None, x, result: CertificationResult, update: bool = True
) -> CertificationResult:
    """The storage-update step on a :class:`CertificationResult`: ``pred``, ``radius`` and ``radius_conservative``
    trimmed by ``memory`` (see the module docstring), everything else kept.

    :param memory: The memory, or ``None`` (then ``result`` is returned unchanged).
    :param x: The certified inputs ``(N, ...)``, in the order of ``result``.
    :param result: The certificates before the memory; ``result.sigma`` is stored with each region.
    :param update: Store the results in the memory (``False``: only trim against it).
    :return: A copy of ``result`` with the trimmed ``pred`` / ``radius`` / ``radius_conservative`` (0 on abstain,
             ``radius_conservative <= radius``) and ``pred_before_memory`` set to ``result.pred``.
    """
    if memory is None:
        return result
    pred_in = np.asarray(result.pred)
    abstain = pred_in == ABSTAIN
    radius_in = np.where(abstain, 0.0, np.asarray(result.radius, dtype=np.float64))
    conservative_in = np.where(abstain, 0.0, np.minimum(result.radius_conservative, radius_in))
    if update:
        pred, radius, conservative = memory.update(
            x, pred_in, radius_in, result.sigma, radius_conservative=conservative_in
        )
    else:
        pred, radius, conservative = memory.query(x, pred_in, radius_in, radius_conservative=conservative_in)
    abstain = pred == ABSTAIN
    radius = np.where(abstain, 0.0, radius)
    conservative = np.where(abstain, 0.0, np.minimum(conservative, radius))
    return dataclasses.replace(
        result, pred=pred, radius=radius, radius_conservative=conservative, pred_before_memory=pred_in.copy()
    )


class CertificationMemory:
    """Memory of certified regions for storage-update certification (Cert-SSBD, after DDRS).

    :param device: Torch device for the distance computations (default CPU); inputs and outputs are numpy.
    :param chunk_size: Stored regions per ``cdist`` chunk (bounds the memory of one step).
    """

    def __init__(self, device=None, chunk_size: int = 8192):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.chunk_size = chunk_size
        self._size = 0
        self._centers = torch.empty((0, 0), dtype=torch.float64, device=self.device)
        self._labels = torch.empty(0, dtype=torch.int64, device=self.device)
        self._radii = torch.empty(0, dtype=torch.float64, device=self.device)
        self._radii_c = torch.empty(0, dtype=torch.float64, device=self.device)  # conservative radii
        self._sigmas = torch.empty(0, dtype=torch.float64, device=self.device)
        self._norm2 = torch.empty(0, dtype=torch.float64, device=self.device)  # squared norms of the centers
        self._max_norm2 = 0.0  # largest squared norm of a stored center, for the cdist error bound

    def __len__(self) -> int:
        return self._size

    @property
    def dim(self) -> int | None:
        """Number of features per stored center (``None`` while the memory has never stored anything)."""
        return self._centers.shape[1] if self._centers.shape[0] else None

    centers = property(lambda self: self._copy(self._centers), doc="Centers (M, D), a copy.")
    labels = property(lambda self: self._copy(self._labels), doc="Labels (M,), a copy.")
    radii = property(lambda self: self._copy(self._radii), doc="Paper radii (M,), a copy.")
    radii_conservative = property(
        lambda self: self._copy(self._radii_c), doc="Conservative radii (M,), a copy; 0 where unknown."
    )
    sigmas = property(lambda self: self._copy(self._sigmas), doc="Sigmas (M,), NaN if unknown.")

    def _copy(self, buffer: torch.Tensor) -> np.ndarray:
        return buffer[: self._size].cpu().numpy().copy()

    def query(self, x, pred, radius, *, radius_conservative=None):
        """Trim ``(x, pred, radius)`` against the stored regions without storing anything.

        :param x: Inputs ``(N, ...)``, flattened to ``(N, D)``.
        :param pred: Predicted labels ``(N,)``, -1 for abstain.
        :param radius: Certified radii ``(N,)``, finite and >= 0.
        :param radius_conservative: Conservative radii ``(N,)``, finite, >= 0 and <= ``radius``; when given, they are
               trimmed too and returned as a third array.
        :return: Trimmed ``(pred, radius)``, or ``(pred, radius, radius_conservative)``.
        """
        out = self._process(*self._validate(x, pred, radius, None, radius_conservative), store=False)
        return out if radius_conservative is not None else out[:2]

    def update(self, x, pred, radius, sigma=None, *, radius_conservative=None):
        """Trim each input in order against everything stored so far (this batch's earlier items too), then store it.

        :param x: Inputs ``(N, ...)``, flattened to ``(N, D)``.
        :param pred: Predicted labels ``(N,)``, -1 for abstain (passed through, not stored).
        :param radius: Certified radii ``(N,)``, finite and >= 0 (results of radius 0 are not stored).
        :param sigma: Noise level per input (scalar or ``(N,)``, > 0), stored alongside; ``None`` stores NaN.
        :param radius_conservative: Conservative radii ``(N,)``, finite, >= 0 and <= ``radius``; when given, they are
               trimmed, stored and returned as a third array; ``None`` stores 0 (unknown, read conservatively).
        :return: Trimmed ``(pred, radius)``, or ``(pred, radius, radius_conservative)``.
        """
        out = self._process(*self._validate(x, pred, radius, sigma, radius_conservative), store=True)
        return out if radius_conservative is not None else out[:2]

    def _validate(self, x, pred, radius, sigma, radius_conservative):
        """Check and convert the inputs of :meth:`query` / :meth:`update`, before any work."""
        pred = np.asarray(pred)
        if pred.ndim != 1 or not np.all(np.isfinite(pred.astype(float))) or np.any(pred != np.round(pred)):
            raise ValueError(f"pred must be a 1-D array of integer labels, got shape {pred.shape}")
        if np.any(pred < ABSTAIN):
            raise ValueError(f"pred must be >= -1 (-1 = abstain), got {pred[pred < ABSTAIN][0]}")
        n = pred.shape[0]
        radius = np.asarray(radius, dtype=np.float64)
        if radius.shape != (n,):
            raise ValueError(f"radius must have shape ({n},) like pred, got {radius.shape}")
        if not np.all(np.isfinite(radius) & (radius >= 0)):
            raise ValueError(f"radius must be finite and >= 0, got {radius[~(np.isfinite(radius) & (radius >= 0))][0]}")
        if radius_conservative is None:
            conservative = np.zeros(n)
        else:
            conservative = np.asarray(radius_conservative, dtype=np.float64)
            if conservative.shape != (n,):
                raise ValueError(f"radius_conservative must have shape ({n},) like pred, got {conservative.shape}")
            bad = ~(np.isfinite(conservative) & (conservative >= 0) & (conservative <= radius))
            if bad.any():
                raise ValueError(
                    f"radius_conservative must be finite, >= 0 and <= radius, got {conservative[bad][0]} "
                    f"(radius {radius[bad][0]})"
                )
            conservative = conservative.copy()
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim < 1 or x.shape[0] != n:
            raise ValueError(f"x must have one row per entry of pred ({n}), got shape {x.shape}")
        flat = x.reshape(n, int(np.prod(x.shape[1:]))).astype(np.float64)
        if self._size and flat.shape[1] != self.dim:
            raise ValueError(
                f"x has shape {x.shape} ({flat.shape[1]} features per sample) but the memory stores centers of "
                f"shape {(self._size, self.dim)}"
            )
        if not np.all(np.isfinite(flat)):
            raise ValueError("x must be finite, got NaN or inf")
        sig = np.full(n, np.nan) if sigma is None else np.asarray(sigma, dtype=np.float64)
        if sigma is not None:
            if sig.ndim > 1 or (sig.ndim == 1 and sig.shape[0] != n):
                raise ValueError(f"sigma must be a scalar or have shape ({n},), got shape {sig.shape}")
            bad = ~(np.isfinite(sig) & (sig > 0))
            if bad.any():
                raise ValueError(f"sigma must be finite and > 0, got {sig.reshape(-1)[bad.reshape(-1)][0]}")
            sig = np.broadcast_to(sig, (n,)).copy()
        return flat, pred.astype(np.int64), radius.copy(), conservative, sig

    def _nearest_conflict(self, xq: torch.Tensor, cq: torch.Tensor):
        """Per query, ``min_j (||x - x_j|| - R_j)`` over stored balls with ``c_j != c`` and its first minimiser."""
        n = self._size
        stored = (self._centers[:n], self._labels[:n], self._radii[:n], self._norm2[:n])
        return nearest_conflict(xq, cq, *stored, self._max_norm2, self.chunk_size)

    def _process(self, x, pred, radius, conservative, sigma, store: bool):
        """Trim (and, if ``store``, store) the inputs block by block, in order."""
        out_pred, out_radius, out_conservative = pred.copy(), radius.copy(), conservative.copy()
        counts = {"relabelled": 0, "trimmed": 0, "stored": 0}
        for start in range(0, x.shape[0], _BLOCK):
            stop = min(start + _BLOCK, x.shape[0])
            xb = torch.from_numpy(x[start:stop]).to(self.device)
            cb = torch.from_numpy(pred[start:stop]).to(self.device)
            # Step 1: nearest conflicting ball among those stored before this block, its label, conservative
            # radius and exact distance.
            best, arg = self._nearest_conflict(xb, cb)
            nearest = arg.clamp(min=0)
            if self._size:
                stored_labels = self._labels[nearest].cpu().numpy()
                stored_conservative = self._radii_c[nearest].cpu().numpy()
                stored_dist = exact_dist(xb, self._centers[nearest]).cpu().numpy()
            else:
                stored_labels, stored_conservative, stored_dist = (np.full(len(arg), v) for v in (-1, 0.0, np.inf))
            best = best.cpu().numpy()
            # Step 2: exact distances inside the block, for items of this block stored before each item.
            inner = torch.cdist(xb, xb, compute_mode="donot_use_mm_for_euclid_dist").cpu().numpy() if store else None
            keep = np.zeros(stop - start, dtype=bool)
            for i in range(stop - start):
                c, r, rc = int(pred[start + i]), float(radius[start + i]), float(conservative[start + i])
                if c == ABSTAIN:
                    continue
                g_min, label = float(best[i]), int(stored_labels[i])
                rc_j, d_j = float(stored_conservative[i]), float(stored_dist[i])
                if store and keep[:i].any():
                    prev = slice(start, start + i)
                    g = np.where(keep[:i] & (out_pred[prev] != c), inner[i, :i] - out_radius[prev], np.inf)
                    j = int(np.argmin(g))
                    if g[j] < g_min:
                        g_min, label = float(g[j]), int(out_pred[start + j])
                        rc_j, d_j = float(out_conservative[start + j]), float(inner[i, j])
                # Step 3: the trim rule (decided on the paper radii; the conservative radius follows).
                if g_min < 0:
                    c, r = label, -g_min
                    rc = min(max(0.0, rc_j - d_j), r)
                    counts["relabelled"] += 1
                elif g_min < r:
                    r, rc = g_min, min(rc, g_min)
                    counts["trimmed"] += 1
                out_pred[start + i], out_radius[start + i], out_conservative[start + i] = c, r, rc
                keep[i] = store and r > 0
            # Step 4: append this block's stored results.
            if keep.any():
                idx = np.flatnonzero(keep) + start
                self._append(x[idx], out_pred[idx], out_radius[idx], out_conservative[idx], sigma[idx])
                counts["stored"] += len(idx)
        logger.debug("memory %s: %s; %d regions stored", "update" if store else "query", counts, self._size)
        return out_pred, out_radius, out_conservative

    def _append(self, x, labels, radii, conservative, sigmas) -> None:
        """Append regions, growing the buffers geometrically."""
        new_size = self._size + x.shape[0]
        if new_size > self._centers.shape[0] or self._centers.shape[1] != x.shape[1]:
            capacity = max(new_size, 2 * self._centers.shape[0], 1024)
            shapes = ((capacity, x.shape[1]),) + ((capacity,),) * 5
            dtypes = (torch.float64, torch.int64) + (torch.float64,) * 4
            grown = [torch.empty(sh, dtype=dt, device=self.device) for sh, dt in zip(shapes, dtypes)]
            if self._size:
                for new, old in zip(grown, self._buffers()):
                    new[: self._size] = old[: self._size]
            self._centers, self._labels, self._radii, self._radii_c, self._sigmas, self._norm2 = grown
        centers = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        rest = (torch.from_numpy(np.ascontiguousarray(v)) for v in (labels, radii, conservative, sigmas))
        values = (centers, *rest, centers.pow(2).sum(dim=1))
        for buffer, value in zip(self._buffers(), values):
            buffer[self._size : new_size] = value
        self._max_norm2 = max(self._max_norm2, float(values[-1].max()))
        self._size = new_size

    def _buffers(self) -> tuple[torch.Tensor, ...]:
        return self._centers, self._labels, self._radii, self._radii_c, self._sigmas, self._norm2

    def check_invariant(self, atol: float = 1e-6) -> bool:
        """Whether no two stored balls with different labels overlap, ``||x_i - x_j|| >= R_i + R_j - atol``, for the
        paper radii and for the conservative radii, and every conservative radius lies in ``[0, R_i]``.

        A diagnostic: it compares all pairs, ``O(M^2)`` (about 2 minutes for 10^5 regions of 10 features on 2 cores,
        twice: once per kind of radius).

        :param atol: Absolute slack for rounding.
        """
        radii, conservative = self._radii[: self._size], self._radii_c[: self._size]
        if bool(((conservative < 0) | (conservative > radii)).any()):
            logger.warning("certification memory invariant violated: a conservative radius outside [0, radius]")
            return False
        n = self._size
        for kind, buffer in (("paper", radii), ("conservative", conservative)):
            stored = (self._centers[:n], self._labels[:n], buffer, self._norm2[:n])
            if any_overlap(*stored, self._max_norm2, self.chunk_size, atol):
                logger.warning("certification memory invariant violated (%s radii, atol=%g)", kind, atol)
                return False
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored regions as CPU tensors (``format_version`` and the arrays of :meth:`save`), for a checkpoint
        loaded with ``torch.load(weights_only=True)``; :meth:`from_state_dict` reads it back."""
        arrays = {name: torch.from_numpy(getattr(self, name)) for name in _ARRAYS}
        return {"format_version": torch.tensor(_FORMAT_VERSION), **arrays}

    @classmethod
    def from_state_dict(cls, state, device=None, chunk_size: int = 8192) -> CertificationMemory:
        """A memory from :meth:`state_dict`'s output.

        :raises ValueError: If ``state`` is not such a mapping of a readable format version.
        """
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("a memory state must be a mapping of names to tensors")
        arrays = {name: value.numpy() for name, value in state.items()}
        return cls._from_arrays(arrays, device, chunk_size)

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory to ``path`` atomically (``np.savez``, no pickle; format version 2).

        :param path: Destination file (written as given; no ``.npz`` suffix is added).
        """
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle,
                format=np.array(_FORMAT),
                format_version=np.array(_FORMAT_VERSION),
                **{name: getattr(self, name) for name in _ARRAYS},
            )

    @classmethod
    def load(cls, path: str | os.PathLike, device=None, chunk_size: int = 8192) -> CertificationMemory:
        """Read a memory written by :meth:`save` (format version 2, or version 1: written before the conservative
        radii were stored; those load as 0, the reading that never overstates a later certificate).

        :param path: File written by :meth:`save`.
        :param device: Torch device for the loaded memory (default CPU).
        :param chunk_size: As in the constructor.
        :raises ValueError: If ``path`` is not a memory file of a readable format version.
        :raises FileNotFoundError: If ``path`` does not exist.
        """
        try:
            with open(path, "rb") as handle:  # our handle: closed even when np.load fails on a damaged archive
                data = np.load(handle, allow_pickle=False)
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise ValueError("not an .npz archive")
                with data:
                    kind = str(data["format"]) if "format" in data.files else None
                    if kind != _FORMAT:
                        raise ValueError(f"missing fields ['format'] or format {kind!r}, expected {_FORMAT!r}")
                    arrays = {field: data[field] for field in _FIELDS if field in data.files}
            return cls._from_arrays(arrays, device, chunk_size)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"path {os.fspath(path)!r} is not a CertificationMemory file: {err}") from err

    @classmethod
    def _from_arrays(cls, arrays: dict, device, chunk_size: int) -> CertificationMemory:
        """A memory from checked arrays (version 1 or 2; see :func:`_check_arrays`)."""
        centers, labels, radii, conservative, sigmas = _check_arrays(arrays)
        memory = cls(device=device, chunk_size=chunk_size)
        if len(labels):
            memory._append(centers, labels, radii, conservative, sigmas)
        return memory


def _check_arrays(arrays: dict) -> tuple[np.ndarray, ...]:
    """The checked ``(centers, labels, radii, radii_conservative, sigmas)`` of a saved memory's arrays."""
    version = arrays.get("format_version")
    if version is None or version.shape != () or int(version) not in (1, _FORMAT_VERSION):
        raise ValueError(f"format version {version}, expected {_FORMAT!r} version 1 or {_FORMAT_VERSION}")
    needed = _ARRAYS if int(version) == _FORMAT_VERSION else tuple(a for a in _ARRAYS if a != "radii_conservative")
    missing = [field for field in needed if field not in arrays]
    if missing:
        raise ValueError(f"missing fields {missing}")
    centers, labels, radii, sigmas = (arrays[f] for f in ("centers", "labels", "radii", "sigmas"))
    m = centers.shape[0] if centers.ndim == 2 else -1
    if int(version) == 1:  # written before the conservative radii were stored: unknown, read as 0
        logger.warning("certification memory of format version 1: conservative radii unknown, loaded as 0")
        conservative = np.zeros(max(m, 0))
    else:
        conservative = arrays["radii_conservative"]
    shapes = (labels.shape, radii.shape, conservative.shape, sigmas.shape)
    if m < 0 or any(shape != (m,) for shape in shapes):
        raise ValueError("inconsistent array shapes")
    if not (np.all(np.isfinite(centers)) and np.all(np.isfinite(radii) & (radii > 0)) and np.all(labels >= 0)):
        raise ValueError("non-finite centers, non-positive radii or negative labels")
    if not np.all((conservative >= 0) & (conservative <= radii)):
        raise ValueError("conservative radii outside [0, radius]")
    return tuple(
        a.astype(t)
        for a, t in zip((centers, labels, radii, conservative, sigmas), (np.float64, np.int64) + (float,) * 3)
    )
