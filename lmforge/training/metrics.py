"""Training metrics: one JSON object per line (metrics.jsonl) and the same rows as CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

FIELDS = ["step", "split", "loss", "lr", "tokens_per_s", "elapsed_s", "tokens"]


class MetricsLog:
    def __init__(self, directory: str | Path, resume_step: int | None = None):
        self.jsonl = Path(directory) / "metrics.jsonl"
        self.csv = Path(directory) / "metrics.csv"
        self.rows: list[dict] = []
        if resume_step is not None and self.jsonl.exists():
            # keep what was logged up to the checkpoint; a resumed run logs the rest again
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when the run was killed
                if row.get("step", 0) <= resume_step:
                    self.rows.append(row)
        self._rewrite()

    def _rewrite(self) -> None:
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        with open(self.csv, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def log(self, **row) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore").writerow(row)
