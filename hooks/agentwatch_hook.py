#!/usr/bin/env python3
"""Agentwatch hook for Claude Code: `python3 -S agentwatch_hook.py` with the hook JSON on stdin.

Spools the event locally and starts a detached flusher; never touches the network itself,
never prints, always exits 0 (exit 2 would block the agent, stdout would reach its context).
`--flush` delivers the spool in the foreground and exits. Stdlib only, Python >= 3.9.
The logic lives in the awhook package next to this file so that it is byte-compiled once
(a script is recompiled on every run, so this one stays small).
"""

import os
import sys

if __name__ == "__main__":
    # Claude Code sends SIGTERM to the hooks still running when it exits (a user typing /exit
    # right after an event): the spool write takes milliseconds, so let it finish rather than
    # lose the event. `_signal`, not `signal`, which imports enum. The flusher is given the
    # default handlers back (flusher.detach).
    import _signal  # type: ignore[import-not-found]  # no stub: `signal` without its enums

    for _sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(_sig, _signal.SIG_IGN)
    # Our package is compiled once and read from __pycache__ after that, even where
    # PYTHONDONTWRITEBYTECODE is set: compiling it on every event would double the hook's run time.
    sys.dont_write_bytecode = False
    try:
        from awhook.main import main

        main(sys.argv[1:])
    except BaseException as exc:  # nothing may escape to Claude Code
        try:
            from awhook.config import load
            from awhook.log import log

            log(load(os.environ).spool_dir, f"hook failed: {type(exc).__name__}: {exc}")
        except BaseException:
            pass
    os._exit(0)
