"""The SVG plots of the HTML report (report/page.py): exec-fault latency per cell,
cost against memory made executable (many-blocks), and a hardware model's scaling
(s2fault calibrate).

Each is an SVG written here: a log-scale bar per cell needs a few dozen lines, where
matplotlib would add a heavy dependency (and a raster or an SVG full of font paths)
for the same picture. Inline, no script, no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

from s2fault.report import _cell_name, _is_dilated, _measured, _status, _word, _workload

_COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "skip": "#b58900", "error": "#757575"}
_MODE_ORDER = ("functional", "dilated", "altra-max")
_PANEL_TITLE = {
    "functional": "functional: TCG at full speed, exec-fault latency from the guest's "
                  "virtual counter",
    "dilated": "dilated: a MODEL, not hardware (time dilation, -icount: a slow CPU); "
               "guest time",
    "altra-max": "altra-max: a MODEL of Ampere Altra Max, not hardware (-icount calibrated "
                 "on one 512M invalidation, 64 vCPUs on 64 nested CPUs); guest time",
}


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _latency(row: dict[str, Any]) -> tuple[float | None, list[float]]:
    ms = _measured(row).exec_fault_ms
    rounds = [float(x) for x in ms.per_round_max if x is not None]
    value = ms.max
    return (float(value) if value is not None else None), rounds


def _fmt_ms(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.3g} s"
    return f"{ms:.3g} ms"


def _ratio(row: dict[str, Any], same_mode: list[dict[str, Any]]) -> str:
    """How a latency expectation reads in the plot: the ratio to its reference."""
    ref = (row.get("declared") or {}).get("latency_reference")
    if not (row.get("declared") or {}).get("latency_ratio_min") or not ref:
        return ""
    value = _latency(row)[0]
    ref_ms = next((_latency(r)[0] for r in same_mode
                   if r["variant"] == ref and _workload(r) == _workload(row)), None)
    if not value or not ref_ms:
        return ""
    return f" ({value / ref_ms:.1f}x {ref})"


def _panels(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    modes = sorted({r["mode"] for r in rows},
                   key=lambda m: (_MODE_ORDER.index(m) if m in _MODE_ORDER else 99, m))
    return [(m, [r for r in rows if r["mode"] == m]) for m in modes]


def latency_svg(rows: list[dict[str, Any]]) -> str:
    """The exec-fault latency of every cell that measured one: a bar per cell (the
    median over rounds of the per-round max, as judged), a dot per round, one
    log-scale panel per mode (functional and dilated latencies are decades apart)."""
    measured = [r for r in rows if _latency(r)[0] is not None]
    width, left, right = 1000, 230, 170
    bar_h, gap, head, axis_h = 18, 8, 40, 34
    plot_w = width - left - right
    parts: list[str] = []
    y = 8
    for mode, cells in _panels(measured):
        values = [v for r in cells for v in [_latency(r)[0], *_latency(r)[1]] if v]
        lo = math.floor(math.log10(max(min(values), 1e-3)))
        hi = math.ceil(math.log10(max(max(values), 1e-3)))
        hi = hi if hi > lo else lo + 1

        def x_of(ms: float, lo: int = lo, hi: int = hi) -> float:
            return left + _log_fraction(ms, lo, hi) * plot_w

        dilated = any(_is_dilated(r) for r in cells)
        title = _PANEL_TITLE.get(mode, mode)
        panel_h = head + len(cells) * (bar_h + gap) + axis_h
        parts.append(f'<g class="panel" data-mode="{_esc(mode)}">')
        parts.append(f'<text x="{left}" y="{y + 16}" class="panel-title">{_esc(title)}</text>')
        if dilated:
            parts.append(f'<text x="{left}" y="{y + 32}" class="model-note">'
                         "model (time dilation): guest time under -icount, not a hardware "
                         "measurement</text>")
        top = y + head
        bottom = top + len(cells) * (bar_h + gap)
        parts += _log_grid(lo, hi, x_of, (top - 4, bottom), bottom + 14, vertical=True)
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{bottom + 30}" class="axis">'
                     "exec-fault latency, log scale"
                     + (" (guest time, model)" if dilated else "") + "</text>")
        for i, row in enumerate(cells):
            value, rounds = _latency(row)
            value = value or 0.0  # `cells` holds measured rows only
            status = _status(row)
            by = top + i * (bar_h + gap)
            x0, x1 = left, x_of(value)
            label = _cell_name(row).rsplit(" ", 1)[0]  # the panel names the mode
            parts.append(f'<text x="{left - 8}" y="{by + bar_h - 4}" class="label">'
                         f"{_esc(label)}</text>")
            tip = (f"{_cell_name(row, '/')}: {_fmt_ms(value)} (median over rounds of "
                   f"the per-round max); rounds: {', '.join(_fmt_ms(v) for v in rounds)}; "
                   f"result: {_word(status)}" + ("; model (time dilation)" if dilated else ""))
            fill = f' fill="{_COLOUR[status]}"'
            parts.append(
                f'<rect class="bar" x="{x0}" y="{by}" width="{max(x1 - x0, 1):.1f}" '
                f'height="{bar_h}"{fill} data-variant="{_esc(row["variant"])}" '
                f'data-mode="{_esc(row["mode"])}" data-ms="{value:g}" '
                f'data-workload="{_esc(_workload(row))}">'
                f"<title>{_esc(tip)}</title></rect>"
            )
            if _is_dilated(row):
                parts.append(f'<rect x="{x0}" y="{by}" width="{max(x1 - x0, 1):.1f}" '
                             f'height="{bar_h}" fill="url(#model-hatch)"/>')
            for v in rounds:
                parts.append(f'<circle class="round" cx="{x_of(v):.1f}" '
                             f'cy="{by + bar_h / 2}" r="3"><title>{_esc(_fmt_ms(v))}</title>'
                             "</circle>")
            # Past the bar and its dots, so neither hides the number.
            tx = max([x1, *(x_of(v) for v in rounds)]) + 6
            parts.append(f'<text x="{tx:.1f}" y="{by + bar_h - 4}" class="value">'
                         f"{_esc(_fmt_ms(value) + _ratio(row, cells))}</text>")
        parts.append("</g>")
        y += panel_h + 16
    height = max(y, 60)
    if not measured:
        parts.append('<text x="10" y="30" class="panel-title">no cell measured an exec-fault '
                     "latency</text>")
    style = (
        "<style>.panel-title{font:bold 13px sans-serif}.model-note{font:12px sans-serif;"
        "fill:#8a6d00}.label{font:12px sans-serif;text-anchor:end}.value,.tick{font:11px "
        "sans-serif}.tick{text-anchor:middle;fill:#555}.axis{font:12px sans-serif;"
        "text-anchor:middle;fill:#333}.grid{stroke:#ddd}.round{fill:#111;fill-opacity:.75}"
        "</style>"
    )
    defs = ('<defs><pattern id="model-hatch" width="6" height="6" '
            'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2" '
            'stroke-opacity=".6"/></pattern></defs>')
    return (
        f'<svg id="latency-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="exec-fault latency per variant and mode">'
        f"{style}{defs}{''.join(parts)}</svg>"
    )


def _blocks(row: dict[str, Any]) -> list[float]:
    blocks = _measured(row).blocks
    return [float(x) for x in (blocks.cumulative_ms if blocks else []) if x is not None]


_LINE_COLOURS = ("#1565c0", "#c62828", "#6a1b9a", "#ef6c00", "#2e7d32", "#00838f", "#5d4037")


def blocks_svg(rows: list[dict[str, Any]]) -> str:
    """many-blocks: total exec-fault cost against the number of blocks made executable,
    a line per variant, log-scale cost (the variants' slopes are decades apart)."""
    series = [(r, _blocks(r)) for r in rows if len(_blocks(r)) >= 2]
    width, height, left, right, top, bottom = 760, 330, 70, 230, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, ys in series for v in ys if v > 0] or [1.0]
    lo = math.floor(math.log10(min(values)))
    hi = math.ceil(math.log10(max(values)))
    hi = hi if hi > lo else lo + 1
    m_max = max([len(ys) for _, ys in series] or [2])

    def x_of(m: int) -> float:
        return left + (m - 1) / max(m_max - 1, 1) * plot_w

    def y_of(ms: float) -> float:
        return top + plot_h - _log_fraction(ms, lo, hi) * plot_h

    parts = _log_grid(lo, hi, y_of, (left, left + plot_w), left - 6)
    for m in range(1, m_max + 1):
        parts.append(f'<text x="{x_of(m):.1f}" y="{top + plot_h + 16}" class="tick">{m}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" class="axis">'
                 "huge blocks made executable (exec-faulted in turn)</text>")
    for i, (row, ys) in enumerate(series):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        points = " ".join(f"{x_of(m):.1f},{y_of(v):.1f}" for m, v in enumerate(ys, 1))
        blocks = _measured(row).blocks
        slope = blocks.slope_ms if blocks else None
        name = f"{row['variant']} ({row['mode']})"
        tip = (f"{name}: total {', '.join(_fmt_ms(v) for v in ys)}; "
               + (f"slope {_fmt_ms(slope)} per block; " if slope is not None else "")
               + f"result: {_word(_status(row))}")
        parts.append(f'<polyline class="series" points="{points}" fill="none" '
                     f'stroke="{colour}" stroke-width="2" data-variant="{_esc(row["variant"])}"'
                     f' data-slope-ms="{slope if slope is not None else ""}">'
                     f"<title>{_esc(tip)}</title></polyline>")
        for m, v in enumerate(ys, 1):
            parts.append(f'<circle cx="{x_of(m):.1f}" cy="{y_of(v):.1f}" r="3" '
                         f'fill="{colour}"><title>{_esc(f"{name}, {m} blocks: {_fmt_ms(v)}")}'
                         "</title></circle>")
        ly = top + 14 + i * 18
        parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                     f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        per = f", {_fmt_ms(slope)}/block" if slope is not None else ""
        parts.append(f'<text x="{left + plot_w + 40}" y="{ly}" class="legend">'
                     f"{_esc(row['variant'] + per)}</text>")
    style = ("<style>.tick{font:11px sans-serif;text-anchor:middle;fill:#555}"
             ".ytick{font:11px sans-serif;text-anchor:end;fill:#555}.axis{font:12px sans-serif;"
             "text-anchor:middle}.legend{font:12px sans-serif}.grid{stroke:#ddd}</style>")
    return (f'<svg id="blocks-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            'aria-label="total exec-fault cost against the number of huge blocks">'
            f"{style}{''.join(parts)}</svg>")


def _log_fraction(value: float, lo: int, hi: int) -> float:
    """Where `value` sits on a log axis from 10**lo to 10**hi, 0 to 1 (clamped below)."""
    return (math.log10(max(value, 10.0 ** lo)) - lo) / (hi - lo)


def _log_grid(lo: int, hi: int, at: Callable[[float], float], across: tuple[float, float],
              label_at: float, vertical: bool = False) -> list[str]:
    """A log-scale plot's grid: a line and a label at each power of ten, which `at`
    places on the axis. Horizontal lines from x = across[0] to across[1], labelled at
    x = label_at (a y axis); with `vertical`, vertical lines over that y range, labelled
    at y = label_at (an x axis)."""
    parts = []
    a, b = across
    for e in range(lo, hi + 1):
        p = at(10.0 ** e)
        label = _esc(_fmt_ms(10.0 ** e))
        if vertical:
            parts.append(f'<line x1="{p:.1f}" y1="{a}" x2="{p:.1f}" y2="{b}" class="grid"/>')
            parts.append(f'<text x="{p:.1f}" y="{label_at}" class="tick">{label}</text>')
        else:
            parts.append(f'<line x1="{a}" y1="{p:.1f}" x2="{b}" y2="{p:.1f}" class="grid"/>')
            parts.append(f'<text x="{label_at}" y="{p + 4:.1f}" class="ytick">{label}</text>')
    return parts


def scaling_svg(details: dict[str, Any]) -> str:
    """Worst exec fault (hardware-equivalent, log scale) against the vCPUs faulting
    together, a line per variant; the serialized line N x one invalidation, the
    soft-lockup threshold and the seed report's figure marked."""
    rows = [r for r in details.get("scaling") or [] if r.get("hw_equivalent_ms")]
    hw = details.get("hardware") or {}
    k = details.get("scale") or 1.0
    width, height, left, right, top, bottom = 820, 380, 80, 250, 30, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    n_max: int = max([r["vcpus"] for r in rows] + [int((details.get("model") or {}).get("vcpus")
                                                   or 64)])
    lockup_ms = 1000.0 * 2 * ((details.get("thresholds_hw_s") or {}).get("watchdog_thresh")
                              or 10)
    values = [r["hw_equivalent_ms"] for r in rows] + [hw.get("worst_fault_ms") or 1.0,
                                                      lockup_ms]
    lo = math.floor(math.log10(max(min(values), 1e-3)))
    hi = math.ceil(math.log10(max(values) * 1.2))

    def x_of(n: float) -> float:
        return left + n / n_max * plot_w

    def y_of(ms: float) -> float:
        return top + plot_h - _log_fraction(ms, lo, hi) * plot_h

    parts = _log_grid(lo, hi, y_of, (left, left + plot_w), left - 6)
    for n in sorted({0, *(r["vcpus"] for r in rows)}):
        parts.append(f'<text x="{x_of(n):.1f}" y="{top + plot_h + 16}" class="tick">{n}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 22}" class="axis">'
                 "vCPUs taking the exec fault together</text>")
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" class="note">'
                 f"MODEL: guest time x k = {k:.3f} (hardware-equivalent), not a hardware "
                 "measurement</text>")
    single = (details.get("model") or {}).get("inval_512m_ms")
    if single:
        ly0, ly1 = y_of(single), y_of(single * n_max)
        parts.append(f'<line x1="{x_of(1):.1f}" y1="{ly0:.1f}" x2="{x_of(n_max):.1f}" '
                     f'y2="{ly1:.1f}" class="serial"><title>N x one invalidation '
                     f"({_esc(_fmt_ms(single))}): a fully serialized interconnect</title></line>")
    gy = y_of(lockup_ms)
    parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot_w}" y2="{gy:.1f}" '
                 'class="lockup"/>')
    parts.append(f'<text x="{left + 4}" y="{gy - 4:.1f}" class="note">soft lockup reported '
                 f"after {lockup_ms / 1000:g} s (2 x watchdog_thresh)</text>")
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        pts = [(r["vcpus"], r["hw_equivalent_ms"]) for r in rows if r["variant"] == variant]
        line = " ".join(f"{x_of(n):.1f},{y_of(v):.1f}" for n, v in pts)
        parts.append(f'<polyline class="series" points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="2" data-variant="{_esc(variant)}"/>')
        for n, v in pts:
            parts.append(f'<circle cx="{x_of(n):.1f}" cy="{y_of(v):.1f}" r="3.5" '
                         f'fill="{colour}"><title>{_esc(f"{variant}, {n} vCPUs: {_fmt_ms(v)}")}'
                         "</title></circle>")
        ly = top + 14 + i * 18
        parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                     f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + plot_w + 40}" y="{ly}" class="legend">'
                     f"{_esc(variant)}</text>")
    seed = hw.get("worst_fault_ms")
    if seed:
        sx, sy = x_of(int((details.get("model") or {}).get("vcpus") or n_max)), y_of(seed)
        parts.append(f'<path d="M{sx - 7:.1f},{sy:.1f} L{sx:.1f},{sy - 7:.1f} '
                     f'L{sx + 7:.1f},{sy:.1f} L{sx:.1f},{sy + 7:.1f} Z" class="seed">'
                     f"<title>the seed report: {_esc(_fmt_ms(seed))} on Altra Max</title></path>")
        parts.append(f'<text x="{sx + 10:.1f}" y="{sy + 4:.1f}" class="legend">seed report: '
                     f"{_esc(_fmt_ms(seed))}</text>")
    ly = top + 14 + 3 * 18
    parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                 f'y2="{ly - 4}" class="serial"/>')
    parts.append(f'<text x="{left + plot_w + 40}" y="{ly}" class="legend">N x one '
                 "(serialized)</text>")
    style = ("<style>.tick{font:11px sans-serif;text-anchor:middle;fill:#555}"
             ".ytick{font:11px sans-serif;text-anchor:end;fill:#555}.axis{font:12px sans-serif;"
             "text-anchor:middle}.note{font:11px sans-serif;fill:#8a6d00;text-anchor:start}"
             ".legend{font:12px sans-serif}.grid{stroke:#ddd}"
             ".serial{stroke:#777;stroke-dasharray:5 4;stroke-width:1.5}"
             ".lockup{stroke:#c62828;stroke-dasharray:2 3}.seed{fill:#000}</style>")
    return (f'<svg id="scaling-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            'aria-label="worst exec fault against vCPUs faulting together">'
            f"{style}{''.join(parts)}</svg>")
