"""How a service reports progress: a plain callback, no terminal code here.

The CLI turns the calls into a line on a terminal (:mod:`vault.progress`); a service
calls it as the work goes on and once more with done equal to total at the end.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
"""(done, total): things done so far (files, events, bytes) of all there are."""
