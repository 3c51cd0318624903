"""Progress output that never touches the data: the loop calls ``update`` after each batch.

A progress bar that wraps a DataLoader iterates it once more than the loop does (tqdm does), which shifts a
seeded shuffle: a quiet and a verbose run with one seed would train on different batches. Here the loop owns the
iteration and the display is told how far it got. On a terminal it draws a tqdm bar; elsewhere (a log file, CI)
it prints a plain line at most every 30 seconds instead of carriage-return fragments (short passes print nothing;
the loop's own epoch line says what happened).
"""

from __future__ import annotations

import sys
import time
from typing import Any


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def log(text: str, quiet: bool = False) -> None:
    """One line of run output (on stderr, like the bars), printed between bar redraws."""
    if quiet:
        return
    if is_terminal():
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


class Progress:
    """Progress of one pass: ``update(n, **postfix)`` after each batch, ``close()`` at the end.

    Example:
        >>> p = Progress(total=3, desc="epoch 1/1", enabled=False)
        >>> p.update(); p.close()
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, leave: bool = False) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.n = 0
        self.start = self.last_print = time.perf_counter()
        self.bar = None
        if self.enabled and is_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=leave, dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

    def update(self, n: int = 1, **postfix: float) -> None:
        if not self.enabled:
            return
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_print >= 30 and self.n < self.total:
            rate = self.n / max(1e-9, now - self.start)
            extra = "".join(f" {k}={v:.4g}" for k, v in postfix.items())
            print(f"{self.desc}: {self.n}/{self.total} ({rate:.2f} it/s){extra}", file=sys.stderr, flush=True)
            self.last_print = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
