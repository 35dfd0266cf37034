"""The per-run HTML report: the gated `reporting.rpt_*` views as one self-contained page.

`render_report` reads the six reporting views and writes `<out_dir>/<safe run id>/index.html`
and a copy at `<out_dir>/latest.html`. The page needs nothing else: inline CSS, inline SVG
charts drawn by the small helpers below (no JavaScript, no fonts or images from the network).
Every data mark (point, bar, cell, tile) is an SVG element of class `mark` with a `<title>`
holding its exact values, so a person hovering, and a test, can read them.

Charts (each an `<svg>` in `<figure data-chart="…">`): `oee-trend`, `downtime-pareto`,
`quality-trend`, `inventory-accuracy`, `energy-intensity`, `data-quality`.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path

VIEWS = (
    "rpt_oee_line_day",
    "rpt_downtime_pareto",
    "rpt_quality_line_day",
    "rpt_inventory_accuracy",
    "rpt_energy_line_day",
    "rpt_data_quality_status",
    "rpt_source_health",
)
# Views that describe the platform itself, not a site's data.
PLATFORM_VIEWS = ("rpt_data_quality_status", "rpt_source_health")

# Tableau 10, reordered so that neighbouring lines differ strongly; flagged marks use FLAG.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#edc948",
           "#ff9da7", "#bab0ac", "#e15759")
FLAG = "#d97706"
CATEGORY_COLOURS = {"unplanned_downtime": "#4e79a7", "setup": "#76b7b2", "idle": "#b6a99b"}
STATUS_COLOURS = {"pass": "#2f855a", "warn": "#d97706", "fail": "#c53030"}
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2}
INK = "#1f2933"

WIDTH = 960  # every chart's viewBox width, px


# --------------------------------------------------------------------------- entry point


def render_report(dsn: str, out_dir: Path, run_id: str, schema: str = "reporting", *,
                  generated_at: datetime | None = None) -> Path:
    """Read the reporting views of `schema` and write the run's report; returns its path
    (`out_dir/<safe run id>/index.html`). `out_dir/latest.html` is replaced by a copy. Both
    files are written atomically (a reader never sees half a page)."""
    data = read_views(dsn, schema)
    page = build_html(data, run_id=run_id,
                      generated_at=generated_at or datetime.now(UTC))
    out_dir = Path(out_dir)
    target = out_dir / safe_run_id(run_id) / "index.html"
    _write_atomic(target, page)
    _write_atomic(out_dir / "latest.html", page)
    return target


def safe_run_id(run_id: str) -> str:
    """A directory name for an Airflow run id (`manual__2026-11-20T06:00:00+00:00`):
    characters other than letters, digits, `.`, `_` and `-` become `_`."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    return safe[:150] or "run"


def read_views(dsn: str, schema: str = "reporting") -> dict[str, list[dict]]:
    """Every reporting view's rows as dicts (numerics as float), in one read-only snapshot."""
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    data: dict[str, list[dict]] = {}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            for view in VIEWS:
                rows = conn.execute(
                    sql.SQL("select * from {}.{}").format(sql.Identifier(schema),
                                                          sql.Identifier(view))
                ).fetchall()
                data[view] = [_plain(row) for row in rows]
    return data


def _plain(row: dict) -> dict:
    from decimal import Decimal

    return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- formatting


def esc(value) -> str:
    """Text for HTML or SVG (element content and attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def qty(value: float | None) -> str:
    """A quantity without needless decimals: 1,414 · 1,408.779."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}".rstrip("0")


def day(value: date) -> str:
    return value.isoformat()


def short_day(value: date) -> str:
    return f"{value:%b} {value.day}"


def _f(value) -> str:
    """An SVG coordinate."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- scales, axes


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about `count` of them)."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    n = round((stop - start) / step)
    return [round(start + i * step, 12) for i in range(n + 1)]


def _step_digits(ticks: list[float], percent: bool) -> int:
    """Decimals the tick labels need (0.025 → 3, 5 → 0)."""
    if len(ticks) < 2:
        return 0
    step = abs(ticks[1] - ticks[0]) * (100 if percent else 1)
    return next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)


@dataclass
class Linear:
    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)


@dataclass
class Plot:
    """A plotting area inside a chart's SVG."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


def y_axis(plot: Plot, ticks: list[float], scale: Linear, fmt, title: str,
           side: str = "left") -> list[str]:
    out = []
    x = plot.left if side == "left" else plot.right
    for tick in ticks:
        y = scale(tick)
        if side == "left":
            out.append(f'<line class="grid" x1="{_f(plot.left)}" x2="{_f(plot.right)}" '
                       f'y1="{_f(y)}" y2="{_f(y)}"/>')
            out.append(f'<text class="tick" x="{_f(x - 8)}" y="{_f(y + 4)}" '
                       f'text-anchor="end">{esc(fmt(tick))}</text>')
        else:
            out.append(f'<text class="tick" x="{_f(x + 8)}" y="{_f(y + 4)}" '
                       f'text-anchor="start">{esc(fmt(tick))}</text>')
    out.append(f'<line class="axis" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(plot.top)}" '
               f'y2="{_f(plot.bottom)}"/>')
    cx = x - 52 if side == "left" else x + 52
    cy = plot.top + plot.height / 2
    out.append(f'<text class="axis-title" x="{_f(cx)}" y="{_f(cy)}" text-anchor="middle" '
               f'transform="rotate({-90 if side == "left" else 90} {_f(cx)} {_f(cy)})">'
               f'{esc(title)}</text>')
    return out


def date_axis(plot: Plot, dates: list[date], x_of) -> list[str]:
    out = [(f'<line class="axis" x1="{_f(plot.left)}" x2="{_f(plot.right)}" '
            f'y1="{_f(plot.bottom)}" y2="{_f(plot.bottom)}"/>')]
    every = max(1, math.ceil(len(dates) / max(1, plot.width // 56)))
    for i, d in enumerate(dates):
        x = x_of(d)
        out.append(f'<line class="axis" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(plot.bottom)}" '
                   f'y2="{_f(plot.bottom + 4)}"/>')
        if i % every == 0:
            out.append(f'<text class="tick" x="{_f(x)}" y="{_f(plot.bottom + 18)}" '
                       f'text-anchor="middle">{esc(short_day(d))}</text>')
    return out


# --------------------------------------------------------------------------- chart pieces


@dataclass
class Point:
    x: date
    y: float
    title: str
    flagged: bool = False


@dataclass
class Series:
    key: str
    label: str
    colour: str
    points: list[Point] = field(default_factory=list)


def svg_open(height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {_f(height)}" '
            f'width="{WIDTH}" height="{_f(height)}" role="img" aria-label="{esc(label)}">')


def legend(items: list[tuple[str, str]], x: float, y: float, flagged: bool | str,
           kind: str = "line") -> list[str]:
    """A horizontal legend: (label, colour) swatches drawn as a line with a point, or as a bar
    (`kind="bar"`); then the flag marker when `flagged` (a string: its label)."""
    out, cx = [], x
    for label, colour in items:
        if kind == "bar":
            swatch = (f'<rect x="{_f(cx + 2)}" y="{_f(y - 7)}" width="14" height="14" rx="2" '
                      f'fill="{colour}"/>')
        else:
            swatch = (f'<line x1="{_f(cx)}" x2="{_f(cx + 18)}" y1="{_f(y)}" y2="{_f(y)}" '
                      f'stroke="{colour}" stroke-width="2.5"/>'
                      f'<circle cx="{_f(cx + 9)}" cy="{_f(y)}" r="3.5" fill="{colour}"/>')
        out.append(f'<g class="legend-item">{swatch}<text class="legend" x="{_f(cx + 24)}" '
                   f'y="{_f(y + 4)}">{esc(label)}</text></g>')
        cx += 36 + 6.8 * len(label)
    if flagged:
        text = flagged if isinstance(flagged, str) else "DQ-flagged day (published with warnings)"
        swatch = (f'<rect x="{_f(cx + 2)}" y="{_f(y - 7)}" width="14" height="14" rx="2" '
                  f'fill="none" stroke="{FLAG}" stroke-width="2.5"/>' if kind == "bar" else
                  f'<circle cx="{_f(cx + 9)}" cy="{_f(y)}" r="6" fill="none" stroke="{FLAG}" '
                  f'stroke-width="2.5"/>')
        out.append(f'<g class="legend-item">{swatch}<text class="legend" x="{_f(cx + 24)}" '
                   f'y="{_f(y + 4)}">{esc(text)}</text></g>')
    return out


def calendar(days) -> list[date]:
    """Every day from the first to the last of `days`: a day the gate held back stays a gap."""
    from datetime import timedelta

    lo, hi = min(days), max(days)
    return [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]


def trend_panel(plot: Plot, dates: list[date], series: list[Series], *, percent: bool,
                y_title: str, zero_based: bool = False) -> list[str]:
    """Axes, one line per series (broken where a day is missing) and a titled point per value."""
    values = [p.y for s in series for p in s.points]
    lo, hi = min(values), max(values)
    if zero_based:
        lo = min(lo, 0.0)
    ticks = nice_ticks(lo, hi, 5)
    if percent:
        ticks = [t for t in ticks if -1e-9 <= t <= 1 + 1e-9] or ticks
        if ticks[0] > lo or ticks[-1] < hi:
            ticks = nice_ticks(lo, hi, 5)
    scale = Linear(ticks[0], ticks[-1], plot.bottom, plot.top)
    tick_digits = _step_digits(ticks, percent)
    fmt = (lambda t: pct(t, tick_digits)) if percent else (lambda t: num(t, tick_digits))
    index = {d: i for i, d in enumerate(dates)}
    inner = plot.width - 24
    step = inner / max(1, len(dates) - 1)

    def x_of(d: date) -> float:
        return plot.left + 12 + (index[d] * step if len(dates) > 1 else inner / 2)

    out = []
    seen = {p.x for s in series for p in s.points}
    for d in dates:
        if d not in seen:  # held back by the gate, or nothing produced
            half = max(step, 12) / 2
            out.append(f'<rect class="gap" x="{_f(x_of(d) - half)}" y="{_f(plot.top)}" '
                       f'width="{_f(2 * half)}" height="{_f(plot.height)}">'
                       f'<title>{esc(day(d))}: no gated data</title></rect>')
    out += y_axis(plot, ticks, scale, fmt, y_title)
    out += date_axis(plot, dates, x_of)
    for s in series:
        pts = sorted(s.points, key=lambda p: p.x)
        runs: list[list[Point]] = []
        for p in pts:
            if runs and index[p.x] == index[runs[-1][-1].x] + 1:
                runs[-1].append(p)
            else:
                runs.append([p])
        for run in runs:
            if len(run) > 1:
                path = " ".join(f"{_f(x_of(p.x))},{_f(scale(p.y))}" for p in run)
                out.append(f'<polyline class="series" points="{path}" stroke="{s.colour}"/>')
        for p in pts:
            x, y = x_of(p.x), scale(p.y)
            if p.flagged:
                out.append(f'<g class="mark point flagged" data-series="{esc(s.key)}" '
                           f'data-value="{p.y!r}"><title>{esc(p.title)}</title>'
                           f'<circle cx="{_f(x)}" cy="{_f(y)}" r="7.5" fill="#fff" '
                           f'stroke="{FLAG}" stroke-width="2.5"/>'
                           f'<circle cx="{_f(x)}" cy="{_f(y)}" r="3.5" fill="{s.colour}"/></g>')
            else:
                out.append(f'<circle class="mark point" data-series="{esc(s.key)}" '
                           f'data-value="{p.y!r}" cx="{_f(x)}" cy="{_f(y)}" r="4" '
                           f'fill="{s.colour}"><title>{esc(p.title)}</title></circle>')
    return out


def empty_svg(message: str) -> str:
    return (svg_open(120, message)
            + f'<rect class="empty" x="1" y="1" width="{WIDTH - 2}" height="118" rx="10"/>'
            + f'<text class="empty-text" x="{WIDTH / 2}" y="66" text-anchor="middle">'
            + f'{esc(message)}</text></svg>')


# --------------------------------------------------------------------------- the six charts


def _line_series(rows: list[dict]) -> tuple[dict[tuple, Series], bool]:
    """One Series per (site, line), coloured in a stable order; label the site only when
    there are several."""
    keys = sorted({(r["site_code"], r["line_code"]) for r in rows})
    multi_site = len({k[0] for k in keys}) > 1
    series = {
        k: Series(key=f"{k[0]}/{k[1]}", label=f"{k[0]} {k[1]}" if multi_site else k[1],
                  colour=PALETTE[i % len(PALETTE)])
        for i, k in enumerate(keys)
    }
    return series, multi_site


def _flag_note(row: dict) -> str:
    if not row.get("dq_flagged"):
        return ""
    checks = row.get("dq_failing_checks")
    return f" · DQ flagged ({checks})" if checks else " · DQ flagged"


def _trend_chart(rows: list[dict], value_key: str, title_of, *, percent: bool, y_title: str,
                 label: str, zero_based: bool = False) -> tuple[str, int]:
    series, _ = _line_series(rows)
    for r in rows:
        if r.get(value_key) is None:
            continue
        series[(r["site_code"], r["line_code"])].points.append(
            Point(r["production_date"], float(r[value_key]), title_of(r),
                  bool(r.get("dq_flagged"))))
    used = [s for s in series.values() if s.points]
    if not used:
        return empty_svg(f"No {label} values for the gated days of this run."), 0
    dates = calendar({p.x for s in used for p in s.points})
    plot = Plot(left=76, top=44, width=WIDTH - 76 - 24, height=250)
    out = [svg_open(plot.bottom + 34, label)]
    out += legend([(s.label, s.colour) for s in used], plot.left, 18,
                  any(p.flagged for s in used for p in s.points))
    out += trend_panel(plot, dates, used, percent=percent, y_title=y_title,
                       zero_based=zero_based)
    out.append("</svg>")
    return "".join(out), sum(len(s.points) for s in used)


def oee_chart(rows: list[dict]) -> tuple[str, int]:
    def title(r):
        return (f"{r['line_code']} · {day(r['production_date'])} · OEE {pct(r['oee'])} "
                f"(availability {pct(r['availability'])}, effectiveness "
                f"{pct(r['effectiveness'])}, quality {pct(r['quality_ratio'])})" + _flag_note(r))

    return _trend_chart(rows, "oee", title, percent=True, y_title="OEE", label="OEE")


def energy_chart(rows: list[dict]) -> tuple[str, int]:
    def title(r):
        return (f"{r['line_code']} · {day(r['production_date'])} · "
                f"{num(r['kwh_per_good_unit'], 3)} kWh per good unit "
                f"({num(r['energy_kwh'], 1)} kWh / {qty(r['good_count'])} good)" + _flag_note(r))

    return _trend_chart(rows, "kwh_per_good_unit", title, percent=False,
                        y_title="kWh per good unit", label="energy per good unit",
                        zero_based=True)


def quality_chart(rows: list[dict]) -> tuple[str, int]:
    """Two panels over the same days: first-pass yield and scrap ratio, a line per line."""
    series_fpy, _ = _line_series(rows)
    series_scrap, _ = _line_series(rows)
    for r in rows:
        key = (r["site_code"], r["line_code"])
        flagged = bool(r.get("dq_flagged"))
        where = f"{r['line_code']} · {day(r['production_date'])}"
        counts = f"{qty(r.get('produced_count'))} produced"
        if r.get("first_pass_yield") is not None:
            series_fpy[key].points.append(Point(
                r["production_date"], float(r["first_pass_yield"]),
                f"{where} · FPY {pct(r['first_pass_yield'])} ({counts})" + _flag_note(r),
                flagged))
        if r.get("scrap_ratio") is not None:
            series_scrap[key].points.append(Point(
                r["production_date"], float(r["scrap_ratio"]),
                f"{where} · scrap {pct(r['scrap_ratio'], 2)} ({counts})" + _flag_note(r),
                flagged))
    fpy = [s for s in series_fpy.values() if s.points]
    scrap = [s for s in series_scrap.values() if s.points]
    if not fpy and not scrap:
        return empty_svg("No quality values for the gated days of this run."), 0
    dates = calendar({p.x for s in fpy + scrap for p in s.points})
    gap = 84
    panel_w = (WIDTH - 76 - 24 - gap) / 2
    left = Plot(left=76, top=70, width=panel_w, height=230)
    right = Plot(left=76 + panel_w + gap, top=70, width=panel_w, height=230)
    flagged = any(p.flagged for s in fpy + scrap for p in s.points)
    out = [svg_open(left.bottom + 34, "First-pass yield and scrap ratio")]
    names = {s.key: (s.label, s.colour) for s in fpy + scrap}
    out += legend(list(names.values()), left.left, 18, flagged)
    for plot, series, name in ((left, fpy, "First-pass yield"), (right, scrap, "Scrap ratio")):
        out.append(f'<text class="panel-title" x="{_f(plot.left)}" y="{_f(plot.top - 14)}">'
                   f'{esc(name)}</text>')
        if series:
            out += trend_panel(plot, dates, series, percent=True, y_title=name,
                               zero_based=name == "Scrap ratio")
        else:
            out.append(f'<text class="empty-text" x="{_f(plot.left + plot.width / 2)}" '
                       f'y="{_f(plot.top + plot.height / 2)}" text-anchor="middle">'
                       f'No values</text>')
    out.append("</svg>")
    return "".join(out), sum(len(s.points) for s in fpy + scrap)


def pareto_chart(rows: list[dict]) -> tuple[str, int]:
    """Lost hours by reason over every gated line (bars, largest first) and the cumulative
    share (line with points, right axis), with the 80 % reference."""
    reasons: dict[tuple, dict] = {}
    for r in rows:
        key = (r["iso22400_time_category"], r["reason_code"])
        agg = reasons.setdefault(key, {"hours": 0.0, "stops": 0, "lines": {}, "flagged": False,
                                       "en": r.get("reason_text_en"),
                                       "zh": r.get("reason_text_zh")})
        agg["hours"] += float(r["downtime_hours"] or 0)
        agg["stops"] += int(r.get("stop_count") or 0)
        agg["lines"][r["line_code"]] = agg["lines"].get(r["line_code"], 0.0) + float(
            r["downtime_hours"] or 0)
        agg["flagged"] |= bool(r.get("dq_flagged"))
        agg["en"] = agg["en"] or r.get("reason_text_en")
        agg["zh"] = agg["zh"] or r.get("reason_text_zh")
    bars = sorted(reasons.items(), key=lambda kv: (-kv[1]["hours"], kv[0]))
    total = sum(a["hours"] for _, a in bars)
    if not bars or total <= 0:
        return empty_svg("No downtime recorded on the gated days of this run."), 0
    plot = Plot(left=76, top=44, width=WIDTH - 76 - 76, height=250)
    ticks = nice_ticks(0, bars[0][1]["hours"] * 1.08, 5)  # headroom for the value labels
    scale = Linear(0, ticks[-1], plot.bottom, plot.top)
    share = Linear(0, 1, plot.bottom, plot.top)
    band = plot.width / len(bars)
    bar_w = min(64.0, band * 0.68)
    any_flag = any(a["flagged"] for _, a in bars)
    height = plot.bottom + 64
    out = [svg_open(height, "Downtime Pareto")]
    categories = sorted({c for (c, _), _ in bars}, key=list(CATEGORY_COLOURS).index)
    out += legend([(c.replace("_", " "), CATEGORY_COLOURS[c]) for c in categories], plot.left,
                  18, any_flag and "includes DQ-flagged days", kind="bar")
    out += legend([("cumulative share", INK)], plot.right - 150, 18, False)
    hour_digits = _step_digits(ticks, False)
    out += y_axis(plot, ticks, scale, lambda t: f"{num(t, hour_digits)} h", "Lost time (h)")
    out += y_axis(plot, [0, 0.2, 0.4, 0.6, 0.8, 1.0], share, lambda t: pct(t, 0),
                  "Cumulative share", side="right")
    out.append(f'<line class="axis" x1="{_f(plot.left)}" x2="{_f(plot.right)}" '
               f'y1="{_f(plot.bottom)}" y2="{_f(plot.bottom)}"/>')
    y80 = share(0.8)
    out.append(f'<line class="ref" x1="{_f(plot.left)}" x2="{_f(plot.right)}" y1="{_f(y80)}" '
               f'y2="{_f(y80)}"/><text class="ref-text" x="{_f(plot.right - 4)}" '
               f'y="{_f(y80 - 5)}" text-anchor="end">80%</text>')
    cumulative, points, marks = 0.0, [], []
    label_size = 11 if band >= 80 else 9.5
    for i, ((category, code), a) in enumerate(bars):
        cx = plot.left + band * (i + 0.5)
        y = scale(a["hours"])
        cumulative += a["hours"]
        share_of = a["hours"] / total
        cum_share = cumulative / total
        name = " / ".join(t for t in (a["en"], a["zh"]) if t)
        per_line = ", ".join(f"{line} {num(h, 1)} h" for line, h in sorted(a["lines"].items()))
        title = (f"{code}{' ' + name if name else ''} ({category.replace('_', ' ')}): "
                 f"{num(a['hours'], 1)} h lost, {pct(share_of)} of all lost time, "
                 f"{a['stops']} stops — {per_line}"
                 + (" · includes DQ-flagged days" if a["flagged"] else ""))
        stroke = f' stroke="{FLAG}" stroke-width="2.5"' if a["flagged"] else ""
        marks.append(f'<rect class="mark bar{" flagged" if a["flagged"] else ""}" '
                     f'data-value="{a["hours"]!r}" x="{_f(cx - bar_w / 2)}" y="{_f(y)}" '
                     f'width="{_f(bar_w)}" height="{_f(plot.bottom - y)}" rx="2" '
                     f'fill="{CATEGORY_COLOURS.get(category, PALETTE[0])}"{stroke}>'
                     f'<title>{esc(title)}</title></rect>')
        marks.append(f'<text class="bar-value" x="{_f(cx)}" y="{_f(y - 5)}" '
                     f'text-anchor="middle">{esc(num(a["hours"], 1))}</text>')
        lines = [code] + [t for t in (a["en"], a["zh"]) if t]
        spans = "".join(
            f'<tspan x="{_f(cx)}" dy="{0 if j == 0 else 13}"'
            f'{" class=" + chr(34) + "code" + chr(34) if j == 0 else ""}>'
            f'{esc(_clip(t, int(band / (label_size * 0.56))))}</tspan>'
            for j, t in enumerate(lines))
        marks.append(f'<text class="bar-label" x="{_f(cx)}" y="{_f(plot.bottom + 16)}" '
                     f'text-anchor="middle" style="font-size:{label_size}px">{spans}</text>')
        points.append((cx, share(cum_share), cum_share, code))
    out += marks
    out.append('<polyline class="series cumulative" points="'
               + " ".join(f"{_f(x)},{_f(y)}" for x, y, _, _ in points) + f'" stroke="{INK}"/>')
    for x, y, value, code in points:
        out.append(f'<circle class="mark point cumulative" data-value="{value!r}" cx="{_f(x)}" '
                   f'cy="{_f(y)}" r="4" fill="#fff" stroke="{INK}" stroke-width="2">'
                   f'<title>{esc(f"cumulative share up to {code}: {pct(value)}")}</title>'
                   f'</circle>')
    out.append("</svg>")
    return "".join(out), 2 * len(bars)


def _clip(text: str, chars: int) -> str:
    chars = max(chars, 4)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _accuracy_colour(value: float | None) -> str:
    """Red below 90 %, through amber and yellow, to green at 100 %."""
    if value is None:
        return "#d9dde3"
    stops = ((0.90, (197, 48, 48)), (0.95, (237, 137, 54)), (0.98, (236, 201, 75)),
             (0.995, (154, 205, 110)), (1.0, (47, 133, 90)))
    if value <= stops[0][0]:
        rgb = stops[0][1]
    else:
        rgb = stops[-1][1]
        for (a, ca), (b, cb) in pairwise(stops):
            if value <= b:
                t = (value - a) / (b - a)
                rgb = tuple(round(x + (y - x) * t) for x, y in zip(ca, cb))
                break
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def inventory_chart(rows: list[dict]) -> tuple[str, int]:
    """A heat table: a row per site × material, a column per count date, each cell coloured by
    its accuracy; the row's overall accuracy (1 − Σ|diff| / Σbook) at the right."""
    if not rows:
        return empty_svg("No cycle counts on the gated days of this run."), 0
    multi_site = len({r["site_code"] for r in rows}) > 1
    materials = sorted({(r["site_code"], r["material_number"]) for r in rows})
    dates = sorted({r["balance_date"] for r in rows})
    label_w, summary_w = 150, 92
    cell_w = min(64.0, (WIDTH - label_w - summary_w - 8) / len(dates))
    cell_h = 24
    top = 58
    height = top + cell_h * len(materials) + 52
    out = [svg_open(height, "Inventory record accuracy")]
    key = [(text, _accuracy_colour(value)) for value, text in (
        (0.9, "≤ 90%"), (0.95, "95%"), (0.98, "98%"), (0.995, "99.5%"), (1.0, "100%"),
        (None, "empty book"))]
    out += legend(key, label_w, 17, any(r.get("dq_flagged") for r in rows) and "DQ-flagged day",
                  kind="bar")
    every = max(1, math.ceil(38 / cell_w))
    for j, d in enumerate(dates):
        if j % every == 0:
            out.append(f'<text class="tick" x="{_f(label_w + cell_w * (j + 0.5))}" '
                       f'y="{top - 8}" text-anchor="middle">{esc(short_day(d))}</text>')
    out.append(f'<text class="tick strong" x="{_f(label_w + cell_w * len(dates) + 10)}" '
               f'y="{top - 8}">overall</text>')
    by_key = {(r["site_code"], r["material_number"], r["balance_date"]): r for r in rows}
    for i, (site, material) in enumerate(materials):
        y = top + i * cell_h
        label = f"{site} {material}" if multi_site else material
        out.append(f'<text class="row-label" x="{label_w - 10}" y="{_f(y + cell_h / 2 + 4)}" '
                   f'text-anchor="end">{esc(label)}</text>')
        book_sum = diff_sum = 0.0
        for j, d in enumerate(dates):
            r = by_key.get((site, material, d))
            if r is None:
                continue
            book_sum += abs(float(r["book_quantity"] or 0))
            diff_sum += abs(float(r["diff_quantity"] or 0))
            acc = r.get("accuracy_ratio")
            x = label_w + j * cell_w
            unit = f" {r['quantity_unit']}" if r.get("quantity_unit") else ""
            title = (f"{material} · {day(d)} · accuracy {pct(acc, 2)} (book "
                     f"{qty(r['book_quantity'])}{unit}, counted {qty(r['physical_quantity'])}"
                     f"{unit}, diff {qty(r['diff_quantity'])}{unit})" + _flag_note(r))
            flag = r.get("dq_flagged")
            stroke = (f' stroke="{FLAG}" stroke-width="2.5"' if flag
                      else ' stroke="#fff" stroke-width="1.5"')
            out.append(f'<rect class="mark cell{" flagged" if flag else ""}" '
                       f'data-value="{acc!r}" x="{_f(x + 1)}" y="{_f(y + 1)}" '
                       f'width="{_f(cell_w - 2)}" height="{cell_h - 2}" rx="3" '
                       f'fill="{_accuracy_colour(acc)}"{stroke}><title>{esc(title)}</title></rect>')
            if cell_w >= 46:
                dark = acc is not None and 0.93 < acc < 0.999
                out.append(f'<text class="cell-text{" dark" if dark else ""}" '
                           f'x="{_f(x + cell_w / 2)}" y="{_f(y + cell_h / 2 + 4)}" '
                           f'text-anchor="middle">{esc(pct(acc, 1) if acc is not None else "–")}'
                           f'</text>')
        overall = 1 - diff_sum / book_sum if book_sum else None
        out.append(f'<text class="row-summary" x="{_f(label_w + cell_w * len(dates) + 10)}" '
                   f'y="{_f(y + cell_h / 2 + 4)}">{esc(pct(overall, 2))}</text>')
    out.append(f'<text class="note" x="{label_w}" y="{_f(height - 14)}">Accuracy = 1 − |counted − '
               f'book| / book per count; overall = 1 − Σ|diff| / Σbook over the gated days.</text>')
    out.append("</svg>")
    return "".join(out), len(rows)


def data_quality_chart(rows: list[dict]) -> tuple[str, int, str]:
    """A tile per source system, coloured by its worst check (fail, warn, pass), and a table
    of every check's latest run (returned as the third value)."""
    if not rows:
        return empty_svg("No quality checks have been recorded yet."), 0, ""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source_system"]].append(r)
    sources = sorted(by_source)
    per_row = min(len(sources), 6)
    gap = 14
    tile_w = (WIDTH - gap * (per_row - 1)) / per_row
    tile_h = 92
    n_rows = math.ceil(len(sources) / per_row)
    out = [svg_open(n_rows * (tile_h + gap) - gap + 2, "Data quality by source")]
    for i, source in enumerate(sources):
        checks = by_source[source]
        counts = {s: sum(1 for c in checks if c["status"] == s) for s in STATUS_COLOURS}
        worst = min((c["status"] for c in checks), key=lambda s: STATUS_ORDER.get(s, 0))
        x = (i % per_row) * (tile_w + gap)
        y = 1 + (i // per_row) * (tile_h + gap)
        colour = STATUS_COLOURS.get(worst, STATUS_COLOURS["fail"])
        title = (f"{source}: {worst} — {len(checks)} checks ({counts['pass']} pass, "
                 f"{counts['warn']} warn, {counts['fail']} fail), "
                 f"{sum(int(c['scopes_failing'] or 0) for c in checks)} failing scopes")
        summary = ", ".join(f"{counts[s]} {s}" for s in ("fail", "warn", "pass") if counts[s])
        out.append(f'<g class="mark tile" data-status="{esc(worst)}"><title>{esc(title)}</title>'
                   f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(tile_w)}" height="{tile_h}" rx="10" '
                   f'fill="{colour}"/>'
                   f'<text class="tile-name" x="{_f(x + 16)}" y="{_f(y + 32)}">'
                   f'{esc(source.upper())}</text>'
                   f'<text class="tile-status" x="{_f(x + tile_w - 16)}" y="{_f(y + 32)}" '
                   f'text-anchor="end">{esc(worst.upper())}</text>'
                   f'<text class="tile-detail" x="{_f(x + 16)}" y="{_f(y + 58)}">'
                   f'{len(checks)} check{"s" if len(checks) != 1 else ""}</text>'
                   f'<text class="tile-detail" x="{_f(x + 16)}" y="{_f(y + 78)}">'
                   f'{esc(summary)}</text></g>')
    out.append("</svg>")
    ordered = sorted(rows, key=lambda r: (STATUS_ORDER.get(r["status"], 0), r["source_system"],
                                          r["check_name"]))
    body = "".join(
        f'<tr class="check {esc(r["status"])}"><td><span class="pill {esc(r["status"])}">'
        f'{esc(r["status"])}</span></td><td>{esc(r["source_system"])}</td>'
        f'<td class="mono">{esc(r["check_name"])}</td><td>{esc(r.get("severity"))}</td>'
        f'<td class="num">{esc(r.get("scopes_failing"))} / {esc(r.get("scopes_checked"))}</td>'
        f'<td class="num">{esc(qty(r.get("failing_count")))}</td>'
        f'<td>{esc(_timestamp(r.get("last_checked_at")))}</td></tr>'
        for r in ordered)
    table = ('<table class="checks"><thead><tr><th>status</th><th>source</th><th>check</th>'
             '<th>severity</th><th class="num">failing / checked scopes</th>'
             '<th class="num">failing rows</th><th>last checked (UTC)</th></tr></thead>'
             f'<tbody>{body}</tbody></table>')
    return "".join(out), len(sources), table


def source_health_section(rows: list[dict]) -> str:
    """The intake at the top of the page: per plant system its status, last load, what was
    quarantined, the open incidents (files set aside, waiting or late, answers refused,
    batches failed), the freshness of its raw tables and whether it is not seen (no batch for
    longer than its threshold) — so a reader sees at once whether the figures below rest on
    every record, and on recent ones."""
    if not rows:
        return ('<section class="source-health"><h2>Source health</h2>'
                '<p class="empty">No load recorded yet.</p></section>')
    ordered = sorted(rows, key=lambda r: (r.get("status") != "attention",
                                          r.get("not_seen_since") is None, r["system"]))
    body = "".join(
        f'<tr class="source {esc(r.get("status"))}"><td><span class="pill '
        f'{"fail" if r.get("status") == "attention" else "pass"}">{esc(r.get("status"))}</span>'
        f'</td><td>{esc(r["system"])}</td><td>{esc(_timestamp(r.get("last_loaded_at")))}</td>'
        f'<td class="num">{esc(qty(r.get("rows_loaded_count")))}</td>'
        f'<td class="num">{esc(qty(r.get("rows_quarantined_count")))}</td>'
        f'<td class="num">{esc(qty(r.get("files_set_aside_count")))}</td>'
        f'<td class="num">{esc(qty(r.get("files_waiting_count")))}</td>'
        f'<td class="num">{esc(qty(r.get("answers_refused_count")))}</td>'
        f'<td class="num">{esc(qty(r.get("batches_failed_count")))}</td>'
        f'<td class="freshness">{_freshness_cell(r)}</td>'
        f'<td class="not-seen">{_not_seen_cell(r)}</td>'
        f'<td class="mono">{esc(r.get("open_incident_kinds") or "")}</td></tr>'
        for r in ordered)
    attention = sum(r.get("status") == "attention" for r in rows)
    summary = (f"{attention} of {len(rows)} sources need attention" if attention
               else f"all {len(rows)} sources ok")
    not_seen = sorted(r["system"] for r in rows if r.get("not_seen_since") is not None)
    if not_seen:
        summary += f" (not seen: {', '.join(not_seen)})"
    return ('<section class="source-health"><h2>Source health</h2>'
            f'<p class="summary">{esc(summary)}: every record a source delivered is loaded or '
            'quarantined; open incidents are listed until they clear; a source is not seen when '
            'no batch loaded for twice its schedule plus a grace.</p>'
            '<table class="checks"><thead><tr><th>status</th><th>source</th>'
            '<th>last load (UTC)</th><th class="num">rows loaded</th>'
            '<th class="num">quarantined</th><th class="num">files set aside</th>'
            '<th class="num">files waiting</th><th class="num">answers refused</th>'
            '<th class="num">batches failed</th><th>freshness</th><th>not seen since (UTC)</th>'
            '<th>open incidents</th></tr></thead>'
            f'<tbody>{body}</tbody></table></section>')


FRESHNESS_PILLS = {"pass": "pass", "warn": "warn", "error": "fail"}


def _freshness_cell(row: dict) -> str:
    """The latest dbt source freshness of the system: a pill, and the stale tables."""
    status = row.get("freshness_status")
    if not status:
        return ""
    stale = f' <span class="mono">{esc(row["stale_tables"])}</span>' if row.get(
        "stale_tables") else ""
    return f'<span class="pill {FRESHNESS_PILLS.get(status, "fail")}">{esc(status)}</span>{stale}'


def _not_seen_cell(row: dict) -> str:
    if row.get("not_seen_since") is None:
        return ""
    entities = row.get("not_seen_entities")
    return esc(_timestamp(row["not_seen_since"]) + (f" ({entities})" if entities else ""))


def _timestamp(value) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- the page


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: #1f2933;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei",
    "WenQuanYi Micro Hei", sans-serif; }
header { background: #102a43; color: #f0f4f8; padding: 28px 0 24px; }
.wrap { max-width: 1008px; margin: 0 auto; padding: 0 24px; }
h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; letter-spacing: -0.01em; }
.meta { display: flex; flex-wrap: wrap; gap: 6px 28px; margin: 0; color: #bcccdc; font-size: 14px; }
.meta dt { display: inline; color: #829ab1; }
.meta dd { display: inline; margin: 0 0 0 6px; color: #f0f4f8; font-weight: 550; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 14px;
  margin: 22px 0 6px; }
.kpi { background: #fff; border-radius: 12px; padding: 14px 16px;
  box-shadow: 0 1px 2px rgba(16, 42, 67, .08); }
.kpi .label { color: #627d98; font-size: 12px; text-transform: uppercase; letter-spacing: .06em; }
.kpi .value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kpi .unit { font-size: 14px; font-weight: 550; color: #627d98; margin-left: 5px; }
.kpi .hint { color: #829ab1; font-size: 12px; }
section { background: #fff; border-radius: 14px; margin: 18px 0; padding: 20px 24px 18px;
  box-shadow: 0 1px 3px rgba(16, 42, 67, .08); }
h2 { margin: 0 0 2px; font-size: 18px; font-weight: 640; }
.lead { margin: 0 0 12px; color: #627d98; font-size: 13.5px; }
figure { margin: 0; }
figure svg { display: block; width: 100%; height: auto; overflow: visible; }
figcaption { color: #829ab1; font-size: 12px; margin-top: 6px; }
svg text { font-family: inherit; fill: #334e68; }
svg .tick { font-size: 11px; fill: #627d98; font-variant-numeric: tabular-nums; }
svg .tick.strong { font-weight: 600; fill: #334e68; }
svg .axis { stroke: #9fb3c8; stroke-width: 1; }
svg .grid { stroke: #e4e7eb; stroke-width: 1; }
svg .axis-title { font-size: 12px; fill: #486581; font-weight: 550; }
svg .panel-title { font-size: 13px; font-weight: 620; fill: #243b53; }
svg .legend { font-size: 12px; fill: #334e68; }
svg .series { fill: none; stroke-width: 2.2; stroke-linejoin: round; stroke-linecap: round; }
svg .series.cumulative { stroke-width: 1.8; stroke-dasharray: 5 3; }
svg .ref { stroke: #c53030; stroke-width: 1; stroke-dasharray: 2 4; }
svg .ref-text { font-size: 11px; fill: #c53030; }
svg .mark { cursor: default; }
svg circle.mark:hover, svg g.mark:hover circle { stroke: #102a43; stroke-width: 2; }
svg rect.mark:hover { opacity: .82; }
svg .bar-value { font-size: 11px; fill: #243b53; font-variant-numeric: tabular-nums; }
svg .bar-label { fill: #334e68; }
svg .bar-label .code { font-weight: 650; fill: #243b53; }
svg .row-label { font-size: 12px; fill: #243b53; font-variant-numeric: tabular-nums; }
svg .row-summary { font-size: 12px; font-weight: 600; fill: #243b53; }
svg .cell-text { font-size: 10.5px; fill: #fff; font-weight: 600; pointer-events: none; }
svg .cell-text.dark { fill: #243b53; }
svg .note { font-size: 11.5px; fill: #829ab1; }
svg .gap { fill: #eef1f4; }
svg .empty { fill: #f8fafc; stroke: #bcccdc; stroke-dasharray: 6 5; }
svg .empty-text { font-size: 15px; fill: #627d98; }
svg .tile-name { font-size: 18px; font-weight: 700; fill: #fff; letter-spacing: .04em; }
svg .tile-status { font-size: 13px; font-weight: 700; fill: #fff; letter-spacing: .08em; }
svg .tile-detail { font-size: 12.5px; fill: rgba(255, 255, 255, .92); }
table.checks { width: 100%; border-collapse: collapse; margin-top: 16px; font-size: 13.5px; }
table.checks th { text-align: left; color: #627d98; font-weight: 600; font-size: 12px;
  border-bottom: 2px solid #e4e7eb; padding: 6px 8px; }
table.checks td { border-bottom: 1px solid #eef1f4; padding: 6px 8px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 12.5px; }
.pill { display: inline-block; min-width: 44px; text-align: center; border-radius: 999px;
  padding: 1px 9px; color: #fff; font-size: 12px; font-weight: 650; text-transform: uppercase; }
.pill.pass { background: #2f855a; } .pill.warn { background: #d97706; } .pill.fail { background: #c53030; }
footer { color: #829ab1; font-size: 12.5px; padding: 8px 0 36px; }
@media print { body { background: #fff; } section { box-shadow: none; border: 1px solid #e4e7eb; } }
"""


@dataclass
class Chart:
    chart_id: str
    title: str
    lead: str
    svg: str
    marks: int
    extra: str = ""
    caption: str = ""


def _figure(chart: Chart) -> str:
    caption = f"<figcaption>{esc(chart.caption)}</figcaption>" if chart.caption else ""
    return (f'<section id="{chart.chart_id}"><h2>{esc(chart.title)}</h2>'
            f'<p class="lead">{esc(chart.lead)}</p>'
            f'<figure data-chart="{chart.chart_id}" data-marks="{chart.marks}">{chart.svg}'
            f'{chart.extra}{caption}</figure></section>')


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _kpis(data: dict[str, list[dict]]) -> str:
    oee = data["rpt_oee_line_day"]
    quality = data["rpt_quality_line_day"]
    energy = data["rpt_energy_line_day"]
    checks = data["rpt_data_quality_status"]
    produced = sum(int(r["produced_count"] or 0) for r in quality)
    first_pass = sum(int(r["first_pass_good_count"] or 0) for r in quality)
    kwh = sum(float(r["energy_kwh"] or 0) for r in energy)
    good = sum(int(r["good_count"] or 0) for r in energy)
    lost = sum(float(r["downtime_hours"] or 0) for r in data["rpt_downtime_pareto"])
    failing = sum(1 for r in checks if r["status"] != "pass")
    flagged = len({(r["site_code"], r["production_date"])
                   for view in ("rpt_oee_line_day", "rpt_quality_line_day", "rpt_energy_line_day")
                   for r in data[view] if r.get("dq_flagged")})
    tiles = [
        ("Mean OEE", pct(_mean(r["oee"] for r in oee)), "", "mean of the line-days"),
        ("First-pass yield", pct(first_pass / produced) if produced else "n/a", "",
         f"{qty(first_pass)} of {qty(produced)} pieces"),
        ("Lost time", num(lost, 1) if data["rpt_downtime_pareto"] else "n/a",
         "h" if data["rpt_downtime_pareto"] else "", "unplanned downtime, setup, idle"),
        ("Energy", num(kwh / good, 3) if good else "n/a", "kWh" if good else "",
         "per good unit"),
        ("Quality checks", f"{len(checks) - failing} / {len(checks)}" if checks else "none",
         "pass" if checks else "", f"{flagged} flagged site-day{'s' if flagged != 1 else ''} shown"),
    ]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><div class="label">{esc(label)}</div>'
        f'<div class="value">{esc(value)}<span class="unit">{esc(unit)}</span></div>'
        f'<div class="hint">{esc(hint)}</div></div>'
        for label, value, unit, hint in tiles) + "</div>"


def _period(data: dict[str, list[dict]]) -> str:
    days = [r["production_date"] for v in ("rpt_oee_line_day", "rpt_quality_line_day",
                                           "rpt_energy_line_day") for r in data[v]]
    days += [r["balance_date"] for r in data["rpt_inventory_accuracy"]]
    days += [r[k] for r in data["rpt_downtime_pareto"]
             for k in ("first_production_date", "last_production_date") if r.get(k)]
    if not days:
        return "no gated days"
    lo, hi = min(days), max(days)
    return day(lo) if lo == hi else f"{day(lo)} – {day(hi)}"


def build_html(data: dict[str, list[dict]], *, run_id: str, generated_at: datetime) -> str:
    """The page for the views' rows (as `read_views` returns them)."""
    sites = sorted({r["site_code"] for v in VIEWS if v not in PLATFORM_VIEWS
                    for r in data[v]})
    dq_svg, dq_marks, dq_table = data_quality_chart(data["rpt_data_quality_status"])
    charts = [
        Chart("oee-trend", "OEE by line",
              "Overall equipment effectiveness per line and production day "
              "(availability × effectiveness × quality, ISO 22400).", *oee_chart(
                  data["rpt_oee_line_day"])),
        Chart("downtime-pareto", "Downtime Pareto",
              "Time lost against planned busy time by reason, all lines, largest first; "
              "the dashed line is the cumulative share.",
              *pareto_chart(data["rpt_downtime_pareto"])),
        Chart("quality-trend", "First-pass yield and scrap",
              "First-pass yield (good at the first pass / produced) and scrap ratio per line "
              "and production day.", *quality_chart(data["rpt_quality_line_day"])),
        Chart("inventory-accuracy", "Inventory record accuracy",
              "Cycle counts: WMS book before the count vs counted quantity, per material and "
              "count date.", *inventory_chart(data["rpt_inventory_accuracy"])),
        Chart("energy-intensity", "Energy per good unit",
              "kWh of the line's machines per good piece, per line and production day.",
              *energy_chart(data["rpt_energy_line_day"])),
        Chart("data-quality", "Data quality by source",
              "The latest run of every quality check: fail blocks the affected site-days "
              "(not shown in this report), warn publishes them flagged.",
              dq_svg, dq_marks, extra=dq_table),
    ]
    stamp = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = (f"<dl class=\"meta\"><div><dt>Site</dt><dd>{esc(', '.join(sites) or '—')}</dd></div>"
            f"<div><dt>Period</dt><dd>{esc(_period(data))}</dd></div>"
            f"<div><dt>Run</dt><dd class=\"run-id\">{esc(run_id)}</dd></div>"
            f"<div><dt>Generated</dt><dd>{esc(stamp)}</dd></div></dl>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Factory report · {esc(', '.join(sites) or 'no data')} · {esc(run_id)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><div class=\"wrap\"><h1>Factory report</h1>{meta}</div></header>"
        f"<main class=\"wrap\">{source_health_section(data.get('rpt_source_health', []))}"
        f"{_kpis(data)}"
        + "".join(_figure(c) for c in charts)
        + "</main><footer class=\"wrap\">Only site-days the quality gate passed or flagged are "
        "shown; blocked days and days not yet checked are left out. Hover a point, bar or cell "
        "for its exact values. Source: the <code>reporting</code> views of the warehouse."
        "</footer></body></html>\n"
    )
