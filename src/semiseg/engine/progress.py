"""What a training job tells the person watching it: log lines, a live ``train.csv``, a bar.

The training loop calls one :class:`Progress`::

    progress = Progress(total, name="mean_teacher", csv_path=out_dir / "train.csv")
    progress.start(start_it, rows)            # rows already done (a resumed run)
    for it in ...:
        progress.update(row)                  # every iteration: the row it appends to train.csv
        if validated:
            progress.validation(row, best, best_it, rows)
    progress.close()

- **One line per validation**, newline-terminated, to ``stream`` (the job's stderr, which the
  workflow sends to ``results/logs/train/...log``)::

      train mean_teacher: iteration 200/30000 (0.7%) | total 0.5123 ce 0.2011 dice 0.3102
      consistency 0.0010 | val Dice 0.8123 | best 0.8123 @ 200 | 3.21 it/s | ETA 2:35:10

  (one line in the log). The loss terms are their means over the iterations since the previous
  line, not one noisy iteration's value; ``it/s`` and the ETA are over the same stretch. A line
  also opens the run (``starting`` or ``resuming at``) and closes it (``finished``), so a log
  never looks empty.
- **A live ``train.csv``**: rewritten (atomically: a temporary file, then a rename) at each
  validation with every row so far, so a long job's learning curves can be plotted while it
  runs. At the end the loop writes the same file once more, complete.
- **A progress bar only on a terminal**: when ``stream`` is a tty (an interactive run) a tqdm bar
  redraws in place and the validation lines are printed above it; in a job log (a file, a SLURM
  output) there is no bar and no carriage return, only the lines above.
"""

from __future__ import annotations

import csv
import datetime
import sys
import time
from pathlib import Path
from typing import TextIO

from semiseg.io import atomic_path

__all__ = ["Progress", "format_duration", "write_rows_csv"]

#: Row keys that are not loss terms (the line shows every other numeric key as a term).
_NOT_TERMS = ("iteration", "lr", "val_dice")


def _iterations(n: int) -> str:
    """``'1 iteration'``, ``'4 iterations'``."""
    return f"{n} iteration{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``D days, H:MM:SS`` past a day); ``?`` when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    return str(datetime.timedelta(seconds=int(round(seconds))))


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """Write ``rows`` (dicts, keys in first-seen order) as a CSV, atomically; nothing if empty."""
    if not rows:
        return
    path = Path(path)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


class Progress:
    """Log lines, live CSV and tty bar of one training run (see the module docstring).

    Args:
        total: the run's number of iterations.
        name: what the lines call the run (the method's name).
        csv_path: the live ``train.csv``; ``None`` writes none.
        stream: where lines (and a bar) go; ``sys.stderr`` when ``None``.
        bar: draw a tqdm bar; ``None`` (the default) draws one only when ``stream`` is a tty.
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, total: int, *, name: str, csv_path: Path | None = None, stream: TextIO | None = None,
                 bar: bool | None = None, clock=time.monotonic):
        self.total = int(total)
        self.name = name
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.stream = stream if stream is not None else sys.stderr
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        self._want_bar = bar
        self._bar = None
        self._clock = clock
        self._sums: dict[str, float] = {}
        self._count = 0
        self._mark_it = 0
        self._mark_time = 0.0
        self._first_it = 0
        self._first_time = 0.0
        self._iteration = 0

    # -- the loop's four calls ------------------------------------------------------------------

    def start(self, iteration: int = 0, rows: list[dict] | None = None) -> None:
        """The run starts (or resumes) at ``iteration``; ``rows`` are the rows already logged."""
        self._iteration = self._mark_it = self._first_it = int(iteration)
        self._mark_time = self._first_time = self._clock()
        if self._want_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self._iteration, desc=f"train {self.name}",
                             file=self.stream, mininterval=1.0, dynamic_ncols=True)
        if iteration:
            self._line(f"resuming at iteration {iteration} of {self.total} ({len(rows or [])} logged rows)")
        else:
            self._line(f"starting, {_iterations(self.total)}")

    def update(self, row: dict) -> None:
        """One iteration is done; ``row`` is its ``train.csv`` row (``iteration`` counts from 0)."""
        self._iteration = int(row["iteration"]) + 1
        for key, value in row.items():
            if key in _NOT_TERMS or not isinstance(value, (int, float)):
                continue
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1
        if self._bar is not None:
            self._bar.update(self._iteration - self._bar.n)

    def validation(self, row: dict, best: float, best_iteration: int, rows: list[dict]) -> str:
        """Print the validation line of ``row`` (which holds ``val_dice``) and rewrite the live CSV
        from ``rows`` (every row so far). Returns the line."""
        done = int(row["iteration"]) + 1
        self._iteration = done
        now = self._clock()
        elapsed = now - self._mark_time
        rate = (done - self._mark_it) / elapsed if elapsed > 0 and done > self._mark_it else float("nan")
        remaining = (self.total - done) / rate if rate == rate and rate > 0 else float("nan")
        terms = " ".join(f"{k} {v / self._count:.4f}" for k, v in self._sums.items()) if self._count else "-"
        best_text = f"{best:.4f} @ {best_iteration}" if best >= 0 else "-"
        val = row.get("val_dice")
        line = (f"iteration {done}/{self.total} ({100.0 * done / max(self.total, 1):.1f}%) | {terms} | "
                f"val Dice {val:.4f} | best {best_text} | "
                f"{rate:.2f} it/s | ETA {format_duration(remaining)}" if val is not None else
                f"iteration {done}/{self.total} | {terms}")
        self._line(line)
        self._sums, self._count = {}, 0
        self._mark_it, self._mark_time = done, now
        if self.csv_path is not None:
            write_rows_csv(rows, self.csv_path)
        return line

    def close(self, finished: bool = True) -> None:
        """Close the bar; ``finished`` prints the closing line (not when the run stops early)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if finished:
            took = self._clock() - self._first_time
            self._line(f"finished {_iterations(self._iteration - self._first_it)} in {format_duration(took)}")

    # -- output --------------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} train {self.name}: {text}"
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
