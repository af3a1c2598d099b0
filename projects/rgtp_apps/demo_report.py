"""What the embedded demo shows and writes: the text tables, atomic text writes, and the quiet mode of ``make demo``
(everything but the tables goes to a log file). The trade-off plot is :func:`rgtp_apps.tradeoff.plot_demo`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any, Dict, Iterator, List, Sequence, TextIO, Tuple

from rgtp.fileio import atomic_write_text  # the core helper, re-exported for the demo modules

__all__ = ["atomic_write_text", "format_table", "quiet"]

_LOG_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


# --------------------------------------------------------------------------------------------------- tables
def _render(head: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def format_table(rows: List[Dict[str, Any]], task: str) -> str:
    """A fixed-width text table of one task's rows: ``detection``, ``detection_cuts`` (the videos with cuts, with
    the resets per cause) or ``recognition``."""
    if task in ("detection", "detection_cuts"):
        head = ["config", "kept/N", "mAP50", "GFLOPs/frame paper", "executed", "ratio"]
        if task == "detection_cuts":
            head += ["resets period/cut"]
        head += ["ms/frame", "speed-up"]
        body = []
        for r in rows:
            cells = [
                r["config"],
                f"{r['kept_tokens']}/{r['tokens']}",
                f"{r['map50']:.3f}",
                f"{r['gflops_paper']:.4f}",
                f"{r['gflops_executed']:.4f}",
                f"{r['gflops_ratio']:.2f}",
            ]
            if task == "detection_cuts":
                cells.append(f"{r['resets_period']}/{r['resets_cut']}")
            cells += [f"{r['ms_per_frame']:.1f}", f"{r['speedup']:.2f}x"]
            body.append(cells)
    else:
        head = [
            "config",
            "kept/N",
            "top-1",
            "GFLOPs/video paper",
            "executed",
            "ratio",
            "ms/clip",
            "speed-up",
        ]
        body = [
            [
                r["config"],
                f"{r['kept_tokens']}/{r['tokens']}",
                f"{r['top1']:.3f}",
                f"{r['gflops_paper']:.4f}",
                f"{r['gflops_executed']:.4f}",
                f"{r['gflops_ratio']:.2f}",
                f"{r['ms_per_clip']:.1f}",
                f"{r['speedup']:.2f}x",
            ]
            for r in rows
        ]
    return _render(head, body)


# --------------------------------------------------------------------------------------------------- quiet mode
def _terminal_handlers(streams: Sequence[Any]) -> List[Tuple[logging.StreamHandler, Any]]:
    """Every stream handler of every logger (the root included) that writes to one of ``streams``."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    found = []
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and any(h.stream is s for s in streams):
                found.append((h, h.stream))
    return found


@contextmanager
def quiet(log_path: str) -> Iterator[TextIO]:
    """Send everything the code inside prints, logs or warns to ``log_path`` (truncated), and yield the real
    standard output for what is meant for the screen.

    Inside: the root logger writes to the file (INFO and above), stream handlers that other libraries attached to
    the terminal (detectron2, torch) write to the file, ``sys.stdout`` / ``sys.stderr`` are the file (prints and
    progress bars), and every warning is logged once per place (``logging.captureWarnings``). Everything is put
    back on exit.
    """
    screen = sys.stdout
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    log = open(log_path, "w", buffering=1)
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
    # marked as the recogniser's own handler, so that its setup_logging() replaces it instead of adding a second
    handler._rgtp = True  # type: ignore[attr-defined]
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    swapped = _terminal_handlers(terminal)
    for h, _ in swapped:
        h.setStream(log)
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings(), redirect_stdout(log), redirect_stderr(log):
            warnings.simplefilter("default")
            yield screen
    except BaseException:
        logging.getLogger("rgtp.demo").exception("failed; the details above")
        screen.write(f"\nfailed: the log is {log_path}\n")
        raise
    finally:
        logging.captureWarnings(False)
        for h in list(root.handlers):
            if h is not handler and h not in saved_root[0]:
                h.close()  # handlers set up inside (the recogniser's log files)
        root.handlers = saved_root[0]
        root.setLevel(saved_root[1])
        for h, stream in swapped:
            h.setStream(stream)
        # handlers created inside on the redirected streams: back to the terminal before the file closes
        for h, _ in _terminal_handlers((log,)):
            h.setStream(sys.__stderr__)
        log.close()
