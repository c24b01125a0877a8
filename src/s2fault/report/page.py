"""The HTML report of a matrix run (report.html) and of a calibration (calibration.html).

One self-contained file (inline CSS and SVG, no script, no network) so it opens
from a CI artifact or a mail attachment; the plots are report/plots.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from s2fault.judge.verdict import ReportedSplat, incidents
from s2fault.report import (
    _atomic_write,
    _cell_name,
    _is_dilated,
    _status,
    _summary,
    _word,
    _workload,
)
from s2fault.report.plots import _blocks, _esc, _latency, blocks_svg, latency_svg, scaling_svg

_MODEL_NOTE = ("Dilated cells run QEMU with -icount time dilation: every guest instruction "
               "costs a fixed slice of guest time, which models a slow CPU. Their latencies "
               "are guest time under that model, not measurements of real hardware.")

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1250px; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.result { font-weight: bold; white-space: nowrap; }
tr.pass td.result { color: #2e7d32; }
tr.fail td.result { color: #c62828; }
tr.skip td.result { color: #8a6d00; }
tr.error td.result { color: #616161; }
.summary { font-size: 1.1em; font-weight: bold; }
.summary.pass { color: #2e7d32; } .summary.fail { color: #c62828; }
.summary.skip { color: #8a6d00; } .summary.error { color: #616161; }
.model { background: #fff3cd; border: 1px solid #e0c36b; padding: 0.5em; }
.badge { font-size: 0.8em; background: #fff3cd; border: 1px solid #e0c36b; padding: 0 3px; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
code { font-size: 0.95em; }
"""


def _locate(path: str | None, results_dir: Path) -> Path | None:
    """Where an artifact is now. Results copied off a CI runner keep their layout
    below the results directory but not their absolute paths, so when the recorded
    path is gone, try its tails below `results_dir`."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return p.resolve()
    parts = p.parts[1:] if p.is_absolute() else p.parts
    # Tails of two parts or more: a bare file name would match any run's file.
    for i in range(len(parts) - 1):
        candidate = results_dir.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate.resolve()
    return None


def _href(target: Path, html_dir: Path) -> str:
    """Relative when the artifact lives beside the report, so a moved or downloaded
    results tree keeps its links; a file: URI otherwise."""
    try:
        rel = target.relative_to(html_dir.resolve())
    except ValueError:
        return target.as_uri()
    return quote(rel.as_posix())


def _log_links(row: dict[str, Any], html_dir: Path) -> str:
    arts = row.get("artifacts") or {}
    run_dir = arts.get("dir")
    wanted = [
        ("console", arts.get("console_log")),
        ("qmp", arts.get("qmp_log")),
        ("result.json", str(Path(run_dir) / "result.json") if run_dir else None),
        ("kernel .config", arts.get("config") or (row.get("build") or {}).get("config")),
    ]
    links = []
    for label, path in wanted:
        where = _locate(path, html_dir)
        if where is not None:
            links.append(f'<a href="{_esc(_href(where, html_dir))}">{_esc(label)}</a>')
        elif path:
            links.append(f'<span title="{_esc(path)}">{_esc(label)} (missing)</span>')
    return " | ".join(links) or "&mdash;"


def _incidents_html(splats: list[dict[str, Any]]) -> str:
    """The console's reports culprit first: each incident's lead, and under it the
    knock-on reports with why each was grouped there (judge.culprit_first)."""
    grouped = incidents([ReportedSplat.from_dict(s) for s in splats])
    if not grouped:
        return ""
    items = []
    for lead, consequences in grouped:
        knock = "".join(
            f"<li>consequence ({_esc(c.why)}): {_esc(c.title)}"
            + (f" [{_esc(c.task)}]" if c.task else "") + "</li>"
            for c in consequences)
        items.append(f"<li><b>{_esc(lead.title)}</b>"
                     + (f" [{_esc(lead.task)}]" if lead.task else "")
                     + (f"<ul>{knock}</ul>" if knock else "") + "</li>")
    return ('<details class="incidents"><summary>reports, culprit first</summary>'
            f'<ul>{"".join(items)}</ul></details>')


def _meta_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _blocks_section(rows: list[dict[str, Any]]) -> str:
    if not any(len(_blocks(r)) >= 2 for r in rows):
        return ""
    return ("<h2>Cost against memory made executable (many-blocks)</h2>\n"
            "<p>Total exec-fault cost (the slowest vCPU per block, median over measured "
            "rounds, summed) after 1..M huge blocks were made executable, log scale. The "
            "slope is the cost of one more block: constant for a fix that invalidates the "
            "whole I-cache at once, proportional to the block size for line-by-line "
            "invalidation.</p>\n" + blocks_svg(rows))


def render_html(rows: list[dict[str, Any]], meta: dict[str, Any] | None, html_dir: Path) -> str:
    meta = meta or {}
    css, summary = _summary(rows)
    show_wl = any(_workload(r) != "exec-fault" for r in rows)
    table = []
    for row in rows:
        status = _status(row)
        result = _word(status) + (" (flaky)" if row.get("flaky") else "")
        mode = _esc(row["mode"])
        if _is_dilated(row):
            mode += ' <span class="badge" title="time dilation: a model, not hardware">model</span>'
        reason = row.get("why") or row.get("reason") or ""
        runs = row.get("runs", 1)
        table.append(
            f'<tr class="{status}"><td>{_esc(row["variant"])}</td>'
            + (f"<td>{_esc(_workload(row))}</td>" if show_wl else "") + f"<td>{mode}</td>"
            f'<td>{_esc(row["declared"]["summary"])}</td><td>{_esc(row["observed"])}'
            + (f" <small>({runs} runs)</small>" if runs and runs > 1 else "")
            + f'</td><td class="result">{_esc(result)}</td><td>{_esc(reason)}'
            + _incidents_html(row.get("splats") or []) + "</td>"
            f"<td>{_log_links(row, html_dir)}</td></tr>"
        )
    meta_html = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(_meta_value(v))}</dd>"
                        for k, v in meta.items()
                        if v not in (None, "", [], {}) and k != "calibration")
    missing = [_cell_name(r, "/") for r in rows if _latency(r)[0] is None]
    no_latency = (f"<p>No latency measured: {_esc(', '.join(missing))}.</p>" if missing else "")
    model = (f'<p class="model">{_esc(_MODEL_NOTE)}</p>'
             if any(_is_dilated(r) for r in rows) else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>s2fault: {_esc(summary)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>s2fault: KVM arm64 stage-2 exec-fault matrix</h1>
<p class="summary {css}">{_esc(summary)}</p>
<dl class="meta">{meta_html}</dl>
<h2>Verdicts</h2>
<table id="verdicts">
<thead><tr><th>variant</th>{"<th>workload</th>" if show_wl else ""}<th>mode</th>
<th>declared</th><th>observed</th><th>result</th><th>reason</th><th>logs</th></tr></thead>
<tbody>
{chr(10).join(table)}
</tbody>
</table>
<h2>Exec-fault latency</h2>
<p>Bar: the latency the verdict used (the median over measured rounds of the slowest
vCPU's exec fault). Dots: the slowest vCPU of each round. Colour: the cell's result
(green pass, red fail, amber skip, grey error); hatched: time dilation (a model).</p>
{model}
{latency_svg(rows)}
{no_latency}
{_blocks_section(rows)}
{calibration_section(meta["calibration"]) if meta.get("calibration") else ""}
</body>
</html>
"""


def write_html(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any] | None = None) -> None:
    path = Path(path)
    _atomic_write(path, render_html(rows, meta, path.parent.resolve()))


def calibration_section(details: dict[str, Any]) -> str:
    summary = details.get("model") or {}
    hw = details.get("hardware") or {}
    return (
        "<h2>Scaling: the model against the seed report</h2>\n"
        f"<p class=\"model\">A MODEL, not hardware: -icount guest time times k = "
        f"{_esc(details.get('scale'))}, fitted on one figure (one 512M invalidation, "
        f"{_esc(hw.get('inval_512m_ms'))} ms on the hardware). Predicted worst exec fault at "
        f"{_esc(summary.get('vcpus'))} vCPUs: {_esc(summary.get('worst_fault_ms'))} ms "
        f"hardware-equivalent; reported: {_esc(hw.get('worst_fault_ms'))} ms.</p>\n"
        + scaling_svg(details))


def write_calibration_html(details: dict[str, Any], path: Path) -> None:
    body = calibration_section(details)
    _atomic_write(Path(path), f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>s2fault calibration: {_esc(details.get('mode'))}</title>
<style>{_CSS}</style></head>
<body>
<h1>s2fault calibration: {_esc(details.get('mode'))}</h1>
{body}
</body>
</html>
""")
