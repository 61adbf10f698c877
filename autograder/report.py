"""``report.html``: one self-contained page about a grading run (plots embedded as PNG).

Per assignment: the statuses, the score distribution, per-question pass rates (from the
gradebook) and the slowest submissions, then every submission's row of ``status.csv``.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report is written headless
import matplotlib.pyplot as plt  # noqa: E402

from autograder import gradebook  # noqa: E402

STATUS_COLORS = {"graded": "#2e7d32", "timeout": "#ef6c00", "crashed": "#c62828", "invalid": "#6a1b9a",
                 "error": "#37474f"}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { color: white; border-radius: 0.3em; padding: 0 0.4em; }
img { max-width: 100%; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.warning { background: #fff3e0; border-left: 0.4em solid #ef6c00; padding: 0.5em 1em; }
"""
WEAK_ENFORCEMENT = {
    "rlimit": "rlimits only (no cgroup could be made: RLIMIT_NPROC does not bind root, GPU kernels get no memory limit)",
    "none": "nothing (the sandbox was off: AUTOGRADER_SANDBOX=off)",
    "": "unknown means (no kernel reported its limits)",
}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _score_plot(rows: list[dict], max_score: float) -> str:
    fig, ax = plt.subplots(figsize=(5, 3))
    scores = [float(r["score"]) for r in rows]
    bins = max(1, min(20, int(max_score) or 1))
    ax.hist(scores, bins=bins, range=(0, max(max_score, 1e-9)), color="#1565c0", edgecolor="white")
    ax.set(xlabel=f"score (of {max_score:g}; manual points count once graded)", ylabel="submissions",
           title="score distribution")
    return _png(fig)


def _question_plot(questions: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(5, 0.35 * len(questions) + 1))
    names = [q["question"] for q in questions][::-1]
    rates = [100 * q["pass_rate"] if q["submissions"] else 0 for q in questions][::-1]
    ax.barh(names, rates, color="#00897b")
    ax.set(xlim=(0, 100), xlabel="% of graded submissions with full points", title="per-question pass rate")
    return _png(fig)


def _cell(value, num: bool = False) -> str:
    return f'<td class="num">{html.escape(str(value))}</td>' if num else f"<td>{html.escape(str(value))}</td>"


def _status(status: str) -> str:
    color = STATUS_COLORS.get(status, "#555")
    return f'<td><span class="status" style="background:{color}">{html.escape(status)}</span></td>'


def _table(header: list[str], body: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _row(r: dict) -> str:
    return ("<tr>" + _cell(r["student"]) + _status(r["status"]) + _cell(f"{float(r['score']):g} / {float(r['max_score']):g}", True)
            + _cell(f"{float(r['auto_score']):g} / {float(r['auto_max_score']):g}", True) + _cell(r["seconds"], True)
            + _cell(r["device"]) + _cell(r.get("enforcement", "")) + _cell(r["reason"]) + "</tr>")


def enforcement_warning(rows: list[dict]) -> str:
    """A loud paragraph when some kernels ran with weak limits ('' when none did)."""
    ran = [r for r in rows if r.get("status") in ("graded", "timeout", "crashed")]  # a kernel was started
    weak = Counter(r.get("enforcement") or "" for r in ran if (r.get("enforcement") or "") in WEAK_ENFORCEMENT)
    if not weak:
        return ""
    lines = "; ".join(f"{n} submission(s) with {WEAK_ENFORCEMENT[kind]}" for kind, n in sorted(weak.items()))
    return (f'<p class="warning"><strong>Weak limits:</strong> the kernels\' memory and processes were limited by '
            f"{html.escape(lines)}. Run <code>autograder doctor</code> on this host to see what it can enforce.</p>")


def assignment_section(assignment: str, rows: list[dict], db_url: str | None) -> str:
    note = ""
    if db_url:  # the gradebook's scores: manual grades entered in formgrader since count
        try:
            current = gradebook.submission_scores(db_url, assignment)
            rows = [dict(r, score=current[r["student"]]) if r["student"] in current else r for r in rows]
        except Exception as err:  # the page still says what it can
            note = f"<p>scores as graded (the gradebook could not be read: {html.escape(str(err))})</p>"
    counts = Counter(r["status"] for r in rows)
    max_score = max((float(r["max_score"]) for r in rows), default=0.0)
    parts = [f"<h2>{html.escape(assignment)}</h2>",
             "<p>" + ", ".join(f"{counts[s]} {s}" for s in STATUS_COLORS if counts[s]) + f" — {len(rows)} submissions</p>",
             note]
    questions = []
    if db_url:
        try:
            questions = gradebook.question_results(db_url, assignment)
        except Exception as err:  # the page still says what it can
            parts.append(f"<p>per-question results unavailable: {html.escape(str(err))}</p>")
    plots = [_score_plot(rows, max_score)] + ([_question_plot(questions)] if questions else [])
    parts.append(f'<div class="plots">{"".join(plots)}</div>')
    if questions:
        parts.append("<h3>Questions</h3>" + _table(
            ["notebook", "question", "points", "full points", "pass rate"],
            ["<tr>" + _cell(q["notebook"]) + _cell(q["question"]) + _cell(f"{q['points']:g}", True)
             + _cell(f"{q['full_points']} / {q['submissions']}", True)
             + _cell(f"{100 * q['pass_rate']:.0f}%" if q["submissions"] else "–", True) + "</tr>" for q in questions]))
    header = ["student", "status", "score", "autograded", "seconds", "device", "limits", "reason"]
    slowest = sorted(rows, key=lambda r: -float(r["seconds"] or 0))[:10]
    parts.append("<h3>Slowest submissions</h3>" + _table(header, [_row(r) for r in slowest]))
    parts.append("<h3>All submissions</h3>" + _table(header, [_row(r) for r in sorted(rows, key=lambda r: r["student"])]))
    return "\n".join(parts)


def write_report(status_rows: list[dict], path: Path, db_url: str | None = None) -> Path:
    """Write the report for the rows of ``status.csv`` (all assignments in it) to ``path``."""
    assignments = sorted({r["assignment"] for r in status_rows})
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(assignment_section(a, [r for r in status_rows if r["assignment"] == a], db_url) for a in assignments)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Grading report</title><style>{CSS}</style></head>"
            f"<body><h1>Grading report</h1><p>{len(status_rows)} submissions, {len(assignments)} assignment(s); "
            f"written {stamp}.</p>{enforcement_warning(status_rows)}{body}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
