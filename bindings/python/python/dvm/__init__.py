"""dvm: run untrusted and machine-generated code in WebAssembly sandboxes, in this process.

    import dvm
    outcome = dvm.run("print(6 * 7)")
    outcome.stdout          # '42\\n'

Every run has hard limits (`dvm.Limits`), no network unless hosts are allowed, and a
workspace of its own. Calls release the GIL: threads run sandboxes at once.
"""

import asyncio
import threading

from ._dvm import Cancel, Dvm, Limits, Outcome, Session, __version__
from .errors import *  # noqa: F403
from .errors import DvmError

__all__ = ["Cancel", "Dvm", "Limits", "Outcome", "Session", "DvmError", "run", "arun",
           "session", "asession", "default", "__version__"]

_default = None
_lock = threading.Lock()


def default():
    """The engine the module-level functions use (made on first use, on `$DVM_HOME`)."""
    global _default
    with _lock:
        if _default is None:
            _default = Dvm()
        return _default


def run(code, runtime="python", **options):
    """Runs `code` in a fresh sandbox of `runtime` (`python`, `python-lite`, `javascript`).

    Options: files (path -> str/bytes), stdin, args, env, limits (dvm.Limits),
    requirements, seed (deterministic, cached), cache, tools (callables, or dicts with
    function/name/description/parameters), allow_net (["host:port", ...]), cancel
    (a dvm.Cancel another thread may use to stop the run).
    """
    return default().run(code, runtime, **options)


async def arun(code, runtime="python", **options):
    """`run` for asyncio: the sandbox runs on a worker thread. Cancelling the task stops
    the sandbox too (its run ends at once)."""
    cancel = options.get("cancel") or Cancel()
    options["cancel"] = cancel
    try:
        return await asyncio.to_thread(run, code, runtime, **options)
    except asyncio.CancelledError:
        cancel.cancel()
        raise


def session(runtime="python", **options):
    """A live interpreter (a context manager): `with dvm.session() as s: s.run("x = 1")`."""
    return default().session(runtime, **options)


async def asession(runtime="python", **options):
    """`session` for asyncio."""
    return await asyncio.to_thread(session, runtime, **options)
