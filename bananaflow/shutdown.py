"""A run asked to stop (the first Ctrl-C): no new request starts; what is in flight lands.

The entry point that owns the terminal sets it; the render loop reads it before each job
claims and pays, so a stopped run never throws away an answer it already paid for.
"""

from __future__ import annotations

import threading

draining = threading.Event()
