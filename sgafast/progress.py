"""How a run shows its progress: a bar on a terminal, one plain line per finished unit in a log."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether stderr, where progress goes, is a terminal (bars) rather than a file (lines)."""
    return sys.stderr.isatty()


def say(line: str) -> None:
    """``sgafast: line`` on stderr in one write, so that no other thread's output splits it."""
    sys.stderr.write(f"sgafast: {line}\n")
    sys.stderr.flush()


class Progress:
    """``total`` units (images, runs, steps): on a terminal a bar, in a log one line per finished
    unit (``[k/total] what``), with ``show`` false nothing. Safe to advance from any thread."""

    def __init__(self, total: int, desc: str, *, show: bool = True, unit: str = "img",
                 label: str = ""):
        self.bar_shown = show and on_terminal()
        self.lines = show and not self.bar_shown
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not self.bar_shown,
                        dynamic_ncols=True)
        self.total, self.label, self.count = total, label, 0
        self.lock = threading.Lock()

    def advance(self, what: str, **postfix) -> None:
        """One unit finished: the bar moves on (showing ``postfix``), or a line says ``what``."""
        with self.lock:
            self.count += 1
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(**postfix)
            if self.lines:
                say(f"{self.label}[{self.count}/{self.total}] {what}")

    def close(self) -> None:
        """End the bar on its own line (before an interruption's message, for one)."""
        self.bar.close()
