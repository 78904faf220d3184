"""Distances for the certification memory with the decisions of exact float64 arithmetic, at matrix-product speed.

The stored balls are scanned in chunks with the fast form ``sqrt(|x|^2 + |x_j|^2 - 2 x.x_j)`` (one ``addmm`` per
chunk, the stored squared norms precomputed at storage time); every pair within that form's worst-case rounding error
of the minimum (:func:`_mm_tolerance`) is then recomputed directly, so near-ties are decided as exact distances decide
them. When too many pairs are near-tied, the whole chunk is recomputed directly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_EPS = float(np.finfo(np.float64).eps)


def exact_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``||a_i - b_i||`` computed directly (no matrix-product shortcut)."""
    return (a - b).pow(2).sum(dim=1).sqrt()


def _mm_tolerance(a_norm2: torch.Tensor, b_norm2_max: torch.Tensor, dim: int) -> torch.Tensor:
    """Worst-case error of ``cdist``'s ``sqrt(|a|^2 + |b|^2 - 2 a.b)`` in float64, per row of ``a``."""
    return torch.sqrt(8.0 * (dim + 3) * _EPS * (a_norm2 + b_norm2_max)) + 1e-12


def _mm_dist(a: torch.Tensor, a_norm2: torch.Tensor, b: torch.Tensor, b_norm2: torch.Tensor) -> torch.Tensor:
    """All-pairs ``sqrt(|a_i|^2 + |b_j|^2 - 2 a_i.b_j)`` from precomputed squared norms (``cdist``'s matrix-product
    form, without recomputing the norms of ``b`` or concatenating augmented matrices at every call)."""
    d2 = torch.addmm(b_norm2.unsqueeze(0), a, b.T, alpha=-2.0).add_(a_norm2.unsqueeze(1))
    return d2.clamp_min_(0.0).sqrt_()


def _first_min(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, nb_rows: int):
    """Per row, the smallest value among scattered ``(row, col, value)`` triples and its smallest col."""
    best = torch.full((nb_rows,), math.inf, dtype=values.dtype, device=values.device)
    best = best.scatter_reduce(0, rows, values, reduce="amin")
    hit = values == best[rows]
    arg = torch.full((nb_rows,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=values.device)
    arg = arg.scatter_reduce(0, rows[hit], cols[hit], reduce="amin")
    return best, torch.where(torch.isfinite(best), arg, -1)


def nearest_conflict(xq, cq, centers, labels, radii, norm2, max_norm2: float, chunk_size: int):
    """Per query row, ``min_j (||x - x_j|| - R_j)`` over the stored balls with ``c_j != c`` and its first minimiser
    (``inf`` and -1 where there is none), with the decisions of exact float64 distances.

    :param xq: Queries ``(B, D)``; ``cq``: their labels ``(B,)``.
    :param centers: Stored centers ``(M, D)`` with ``labels``, ``radii`` and squared norms ``norm2`` ``(M,)``.
    :param max_norm2: The largest stored squared norm (for the rounding bound).
    :param chunk_size: Stored balls per chunk.
    """
    nb = xq.shape[0]
    best = torch.full((nb,), math.inf, dtype=torch.float64, device=xq.device)
    arg = torch.full((nb,), -1, dtype=torch.int64, device=xq.device)
    xq_norm2 = xq.pow(2).sum(dim=1)
    tol2 = 2 * _mm_tolerance(xq_norm2, max_norm2, xq.shape[1])
    for start in range(0, len(labels), chunk_size):
        stop = min(start + chunk_size, len(labels))
        chunk_x, chunk_l, chunk_r = centers[start:stop], labels[start:stop], radii[start:stop]
        same = chunk_l[None, :] == cq[:, None]
        # Fast screen: matrix-product distances minus radii, other-label balls only.
        g = _mm_dist(xq, xq_norm2, chunk_x, norm2[start:stop]).sub_(chunk_r).masked_fill_(same, math.inf)
        row_min = g.min(dim=1).values
        limit = torch.where(torch.isfinite(row_min), row_min + tol2, -math.inf)
        rows, cols = torch.nonzero(g <= limit[:, None], as_tuple=True)
        if rows.numel() <= 8 * nb + 1024:
            # Exact recomputation of every pair that can be the true minimum.
            g_exact = exact_dist(xq[rows], chunk_x[cols]) - chunk_r[cols]
            chunk_best, chunk_arg = _first_min(g_exact, rows, cols, nb)
        else:
            # Too many near-ties: exact distances for the whole chunk.
            g = torch.cdist(xq, chunk_x, compute_mode="donot_use_mm_for_euclid_dist").sub_(chunk_r)
            chunk_best, chunk_arg = g.masked_fill_(same, math.inf).min(dim=1)
            chunk_arg = torch.where(torch.isfinite(chunk_best), chunk_arg, -1)
        # Earlier chunks win ties (storage order, like the reference rule).
        better = chunk_best < best
        best = torch.where(better, chunk_best, best)
        arg = torch.where(better, chunk_arg + start, arg)
    return best, arg


def any_overlap(centers, labels, radii, norm2, max_norm2: float, chunk_size: int, atol: float) -> bool:
    """Whether two stored balls of different labels overlap by more than ``atol`` (``||x_i - x_j|| < R_i + R_j -
    atol``), all pairs compared, decisions of exact float64 distances."""
    for start in range(0, len(labels), chunk_size):
        stop = min(start + chunk_size, len(labels))
        rows_x, rows_l, rows_r = centers[start:stop], labels[start:stop], radii[start:stop]
        rows_n2 = norm2[start:stop]
        tol = _mm_tolerance(rows_n2, max_norm2, rows_x.shape[1])
        for begin in range(0, len(labels), chunk_size):
            end = min(begin + chunk_size, len(labels))
            cols_x, cols_l, cols_r = centers[begin:end], labels[begin:end], radii[begin:end]
            d = _mm_dist(rows_x, rows_n2, cols_x, norm2[begin:end])
            need = rows_r[:, None] + cols_r[None, :] - atol
            suspect = (rows_l[:, None] != cols_l[None, :]) & (d < need + tol[:, None])
            i, j = torch.nonzero(suspect, as_tuple=True)
            if i.numel() > 8 * (stop - start) + 1024:
                exact = torch.cdist(rows_x, cols_x, compute_mode="donot_use_mm_for_euclid_dist")
                overlap = suspect & (exact < need)
            else:
                overlap = exact_dist(rows_x[i], cols_x[j]) < need[i, j]
            if bool(overlap.any()):
                return True
    return False
