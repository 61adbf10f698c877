"""``report.html``: one self-contained page about a grading run (plots embedded as PNG), from
the jinja2 template ``autograder/templates/report.html.j2`` (every value escaped).

Per assignment: the statuses, the score distribution, per-question pass rates (from the
gradebook) and the slowest submissions, then every submission's row of ``status.csv``.
"""

from __future__ import annotations

import base64
import functools
import io
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # the report is written headless
import matplotlib.pyplot as plt  # noqa: E402

from autograder import gradebook  # noqa: E402

STATUS_COLORS = {"graded": "#2e7d32", "timeout": "#ef6c00", "crashed": "#c62828", "invalid": "#6a1b9a",
                 "error": "#37474f"}

WEAK_ENFORCEMENT = {
    "rlimit": "rlimits only (no cgroup could be made: RLIMIT_NPROC does not bind root, GPU kernels get no memory limit)",
    "none": "nothing (the sandbox was off: AUTOGRADER_SANDBOX=off)",
    "": "unknown means (no kernel reported its limits)",
}


def _png(fig) -> str:
    """The figure as base64 PNG (embedded: the page is one file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


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


def weak_limits(rows: list[dict]) -> str:
    """What limited the kernels of some submissions, when it was weak ('' when it never was)."""
    ran = [r for r in rows if r.get("status") in ("graded", "timeout", "crashed")]  # a kernel was started
    weak = Counter(r.get("enforcement") or "" for r in ran if (r.get("enforcement") or "") in WEAK_ENFORCEMENT)
    return "; ".join(f"{n} submission(s) with {WEAK_ENFORCEMENT[kind]}" for kind, n in sorted(weak.items()))


def _shown(row: dict) -> dict:
    return dict(row, enforcement=row.get("enforcement", ""), host=row.get("host", ""),  # status.csv of older runs
                score_text=f"{float(row['score']):g} / {float(row['max_score']):g}",
                auto_text=f"{float(row['auto_score']):g} / {float(row['auto_max_score']):g}")


def assignment_section(assignment: str, rows: list[dict], db_url: str | None) -> dict:
    """What the page shows of one assignment: counts, plots, questions, submissions."""
    notes, questions = [], []
    if db_url:  # the gradebook's scores: manual grades entered in formgrader since count
        try:
            current = gradebook.submission_scores(db_url, assignment)
            rows = [dict(r, score=current[r["student"]]) if r["student"] in current else r for r in rows]
        except Exception as err:  # the page still says what it can
            notes.append(f"scores as graded (the gradebook could not be read: {err})")
        try:
            questions = gradebook.question_results(db_url, assignment)
        except Exception as err:  # the page still says what it can
            notes.append(f"per-question results unavailable: {err}")
    counts = Counter(r["status"] for r in rows)
    max_score = max((float(r["max_score"]) for r in rows), default=0.0)
    shown = [_shown(r) for r in rows]
    return {
        "assignment": assignment,
        "counts": ", ".join(f"{counts[s]} {s}" for s in STATUS_COLORS if counts[s]),
        "notes": notes,
        "plots": [_score_plot(rows, max_score)] + ([_question_plot(questions)] if questions else []),
        "questions": questions,
        "slowest": sorted(shown, key=lambda r: -float(r["seconds"] or 0))[:10],
        "rows": sorted(shown, key=lambda r: r["student"]),
    }


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("autograder", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.get_template("report.html.j2")


def write_report(status_rows: list[dict], path: Path, db_url: str | None = None) -> Path:
    """Write the report for the rows of ``status.csv`` (all assignments in it) to ``path``."""
    assignments = sorted({r["assignment"] for r in status_rows})
    page = _template().render(
        submissions=len(status_rows), stamp=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        weak_limits=weak_limits(status_rows), colors=STATUS_COLORS,
        sections=[assignment_section(a, [r for r in status_rows if r["assignment"] == a], db_url) for a in assignments])
    path.write_text(page, encoding="utf-8")
    return path
