"""Crash injection for tests: ``EVAULT_CRASH_AT=<step>`` kills the process at that step.

    >>> crash_point("send.copied")   # does nothing unless EVAULT_CRASH_AT=send.copied

The robustness tests run a command in a subprocess with this variable and then check that
the vault verifies, nothing half-written is visible, and a re-run completes the work. The
process dies with SIGKILL, as a power cut or ``kill -9`` would end it: no cleanup runs.

``EVAULT_PAUSE_AT=<step>`` instead says ``evault: paused at <step>`` on stderr and waits
there (up to 10 minutes), so that a test can interrupt the command (Ctrl-C) at a known point,
or do something meanwhile (drop the SFTP connection, change the uploaded file on the server)
and then let the command go on with SIGUSR1.
"""

from __future__ import annotations

import os
import signal
import sys
import time

STEPS = (
    "init.config_written",
    "init.migrated",
    "ingest.blob_written",
    "ingest.before_commit",
    "package.payload_written",
    "package.before_commit",
    "package.after_commit",
    "send.sftp_partial",
    "send.sftp_uploaded",
    "send.sftp_renamed",
    "send.copied",
    "send.linked",
    "send.delivered",
    "send.after_commit",
    "export.after_body",
    "item_export.written",
    "open.staged",
    "ack.before_commit",
    "ack.after_commit",
    "import.before_commit",
    "import.after_commit",
    "metadata.converted",
    "metadata.committed",
)


def crash_point(step: str) -> None:
    """Die here, at once, if the environment asks for it."""
    if os.environ.get("EVAULT_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("EVAULT_PAUSE_AT") == step:
        # In short naps, not one long sleep: Python acts on a signal between bytecodes, and
        # a Ctrl-C that lands after the last check and before the sleep starts (this thread
        # waiting for the GIL, or preempted) would be acted on only when the sleep ends.
        released: list[int] = []
        try:
            previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: released.append(signum))
        except ValueError:  # not the main thread: only the deadline ends the pause
            previous = None
        # Said only once SIGUSR1 is caught: a test may send it as soon as it reads this.
        print(f"evault: paused at {step}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not released:
            time.sleep(0.05)
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
