"""What the report says about metrics that did not (or cannot) run, for the report stage and the page.

Whether LPIPS ran: one line per outcome, from each run's ``lpips_status`` in metrics.json. The
report's Table 1 (markdown) and the site page both say it, so a reader never takes an empty LPIPS
column for a measured one. ``lpips_status`` is "ok", or the reason it did not run (the
AlexNet weights missing: ``msgnn-bench weights download lpips-alexnet``).
"""
from __future__ import annotations


def lpips_lines(statuses: dict[str, str | None]) -> list[str]:
    """``{run key: lpips_status}`` -> sentences, one per distinct status (runs named when they differ)."""
    by: dict[str, list[str]] = {}
    for key, status in statuses.items():
        by.setdefault(str(status or "not recorded in metrics.json"), []).append(key)
    out = []
    for status, keys in sorted(by.items()):
        which = f"{len(keys)} run{'s' if len(keys) != 1 else ''}" + (f": {', '.join(keys)}" if len(by) > 1 else "")
        out.append(f"LPIPS ran ({which})." if status == "ok" else f"LPIPS did not run ({which}): {status}")
    return out


# Sets without ground truth (real-world rain) get no score: papers print NIQE/BRISQUE there, but no
# maintained package computes them offline from data it ships (the facts: docs/metrics.md).
NO_REFERENCE_NOTE = ("no ground truth, so no PSNR/SSIM; and no NIQE/BRISQUE either: no maintained package "
                     "computes them offline from data it ships (docs/metrics.md, \"No-reference scores\")")
