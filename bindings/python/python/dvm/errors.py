"""dvm's errors as Python exceptions, one class per error kind (`kind` holds its name)."""


class DvmError(Exception):
    """An error of dvm; `kind` names it as dvm's JSON does (`invalid_input`, ...)."""

    kind = "internal"


def _kind(name, doc):
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return type(name, (DvmError,), {"__doc__": doc, "kind": snake, "__module__": __name__})


InvalidInput = _kind("InvalidInput", "A request dvm refuses: bad code, paths, options.")
InvalidLimits = _kind("InvalidLimits", "Limits out of range.")
UnknownRuntime = _kind("UnknownRuntime", "No runtime of that id.")
SessionClosed = _kind("SessionClosed", "The session ended (a limit, exit() or close()).")
Install = _kind("Install", "A runtime could not be installed.")
Packages = _kind("Packages", "Packages could not be installed.")
UnknownPackage = _kind("UnknownPackage", "No such package.")
UnsupportedRequirement = _kind("UnsupportedRequirement", "A requirement dvm cannot install.")
PackageHash = _kind("PackageHash", "A package's hash did not match.")
Capacity = _kind("Capacity", "No sandbox slot was free.")
QueueFull = _kind("QueueFull", "Too many runs wait already.")
Home = _kind("Home", "dvm's home directory could not be used.")
HomeNotPrivate = _kind("HomeNotPrivate", "dvm's home is writable by others.")
Damaged = _kind("Damaged", "Stored data failed its check.")
Internal = _kind("Internal", "A fault of dvm's own.")
ReadInput = _kind("ReadInput", "An input file could not be read.")
WriteOutput = _kind("WriteOutput", "An output could not be written.")

__all__ = [name for name, value in dict(globals()).items()
           if isinstance(value, type) and issubclass(value, DvmError)]
