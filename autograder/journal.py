"""The record of a grading run in ``--out``: the journal (one JSON line per submission graded,
appended and fsynced once its grades are in the gradebook, so a killed run resumes without
grading anyone twice) and ``status.csv``, its latest line per submission."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

STATUS_COLUMNS = ("assignment", "student", "status", "reason", "score", "max_score", "auto_score",
                  "auto_max_score", "needs_manual_grade", "seconds", "host", "worker", "device", "enforcement", "graded_at")
# how the kernel's memory and processes were limited: a cgroup, the rlimit fallback, or not at all


def journal_path(out: Path) -> Path:
    return out / ".autograder" / "journal.jsonl"


def read_journal(out: Path) -> dict[tuple[str, str], dict]:
    """The latest entry per (assignment, student); a torn last line (killed mid-write) is ignored."""
    latest: dict[tuple[str, str], dict] = {}
    path = journal_path(out)
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                latest[(entry["assignment"], entry["student"])] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return latest


def append_journal(out: Path, entry: dict) -> None:
    path = journal_path(out)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_status_csv(out: Path) -> Path:
    rows = sorted(read_journal(out).values(), key=lambda e: (e["assignment"], e["student"]))
    path = out / "status.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=STATUS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def read_status_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
