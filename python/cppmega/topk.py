"""Exact top-k selection (docs/contracts.md section 4, ``topk``), over include/cppmega/ops/topk.hpp."""

from . import _C
from ._arrays import Operand


def topk(scores, k, starts=None, ends=None, *, out=None, backend=None, stream=None):
    """Indices of the ``k`` largest selectable entries of each row, sorted by value descending,
    ties to the lower index; ``-1`` pads rows with fewer than ``k`` selectable entries.

    scores: f32 or bf16 ``[R, T]`` (or ``[B, S, T]``); the row stride may exceed T.
    starts, ends: optional i32/i64 ``[R]`` (``[B, S]``): each row's valid columns ``[start, end)``,
    clamped to ``[0, T]``. NaN and -inf are never selected.
    Returns i32 ``[R, k]`` (``[B, S, k]``) in the scores' framework, on their device.
    """
    op = "topk"
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{op}: k must be an int, got {type(k).__name__}")
    sa = Operand(op, "scores", scores)
    st = Operand(op, "starts", starts) if starts is not None else None
    en = Operand(op, "ends", ends) if ends is not None else None
    if out is None:
        out = sa.empty(tuple(sa.shape[:-1]) + (k,) if k >= 0 else (0,), "i32")
    oa = Operand(op, "out", out)
    _C.topk_out(sa.transport, sa.dtype, k,
                st.transport if st else None, st.dtype if st else None,
                en.transport if en else None, en.dtype if en else None,
                oa.transport, oa.dtype, backend or "", sa.stream(stream))
    return out
