from os import PathLike
from typing import Any, Callable, Iterable, Mapping, Optional, Union

__version__: str

Tool = Union[Callable[..., Any], Mapping[str, Any]]

class Limits:
    """Limits of one run; each left out keeps dvm's default."""
    timeout: Optional[float]
    memory: Optional[int]
    fuel: Optional[int]
    max_output: Optional[int]
    disk: Optional[int]
    files: Optional[int]
    open_files: Optional[int]
    def __init__(
        self,
        *,
        timeout: Optional[float] = None,
        memory: Optional[int] = None,
        fuel: Optional[int] = None,
        max_output: Optional[int] = None,
        disk: Optional[int] = None,
        files: Optional[int] = None,
        open_files: Optional[int] = None,
    ) -> None: ...

class Cancel:
    """Stops a run from another thread: pass it as `cancel=`, then call `cancel()`."""
    def __init__(self) -> None: ...
    def cancel(self) -> None: ...

class Outcome:
    """How a run ended and what it left."""
    status: str
    exit_code: Optional[int]
    stdout: str
    stderr: str
    stdout_bytes: bytes
    stderr_bytes: bytes
    limit: Optional[str]
    files: dict[str, Any]
    display: list[dict[str, Any]]
    duration: float
    fuel_used: int
    memory_peak_bytes: int
    tool_calls: list[dict[str, Any]]
    net: list[dict[str, Any]]
    cache: str
    @property
    def ok(self) -> bool: ...
    def to_json(self) -> str: ...

class Session:
    """A live interpreter: variables and imports stay between calls."""
    def run(
        self,
        code: str,
        *,
        stdin: Optional[str] = None,
        limits: Optional[Limits] = None,
        tools: Optional[Iterable[Tool]] = None,
        allow_net: Optional[list[str]] = None,
        cancel: Optional[Cancel] = None,
    ) -> Outcome: ...
    def write_file(self, path: str, content: Union[str, bytes]) -> None: ...
    def read_file(self, path: str) -> bytes: ...
    def snapshot(self) -> str: ...
    def fork(self, count: int = 1) -> list["Session"]: ...
    @property
    def is_open(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Session": ...
    def __exit__(self, *args: Any) -> None: ...

class Dvm:
    """One engine: its home (runtimes, caches, snapshots) and compiled modules."""
    def __init__(self, home: Optional[Union[str, PathLike[str]]] = None) -> None: ...
    def run(
        self,
        code: str,
        runtime: str = "python",
        *,
        files: Optional[Mapping[str, Union[str, bytes]]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        args: Optional[list[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        limits: Optional[Limits] = None,
        requirements: Optional[list[str]] = None,
        seed: Optional[int] = None,
        cache: bool = True,
        tools: Optional[Iterable[Tool]] = None,
        allow_net: Optional[list[str]] = None,
        cancel: Optional[Cancel] = None,
    ) -> Outcome: ...
    def session(
        self,
        runtime: str = "python",
        *,
        files: Optional[Mapping[str, Union[str, bytes]]] = None,
        env: Optional[Mapping[str, str]] = None,
        requirements: Optional[list[str]] = None,
    ) -> Session: ...
    def resume(self, snapshot_id: str, runtime: str = "python") -> Session: ...
