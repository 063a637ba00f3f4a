"""The few numbers DVC compares: ``headline.json`` next to each run's ``metrics.json``.

``dvc exp show`` / ``dvc metrics show`` put every number of every metrics file in a column; with
``metrics.json`` (every protocol, RGB and Y, LPIPS, timings, provenance) declared as DVC metrics
that was hundreds of columns. So ``dvc.yaml`` declares only this file as a metric: PSNR and SSIM
per scored set under the paper's own protocol (the main columns of Table 1); ``metrics.json``
stays the tables' single source, committed to git as a plain (``cache: false``) output.
"""
from __future__ import annotations

from benchmark.evaluation.protocols import PAPER

FILE = "headline.json"


def of_results(key: str, results: dict) -> dict:
    """``{key: {set: {"psnr", "ssim"}}}`` from ``metrics.json``'s ``results`` of run ``key``; sets
    without ground truth (real-world) have no score and no entry.

    The run key is the top level on purpose: DVC names a metric column by its key alone when that
    key is unique across metrics files (``prenet-rain200h.rain12.psnr``) and by ``<file>:<key>``
    otherwise; ``rain200h.psnr`` in every file would make every header 60 characters wide.
    Rounded: DVC shows 5 significant digits anyway, and short values keep the columns narrow."""
    return {key: {s: {"psnr": round(m[f"psnr:{PAPER}"], 3), "ssim": round(m[f"ssim:{PAPER}"], 4)}
                  for s, m in results.items() if f"psnr:{PAPER}" in m}}
