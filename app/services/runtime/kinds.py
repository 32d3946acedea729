"""Task kinds: named plug-ins that do the actual work.

This module is the whole plug-in API: ``TaskKind``, ``task_kind``, ``KindParams``, and the
:class:`TaskContext` a running kind is given (with ``Work``, the type of its ``work=``). A kind
is a class registered under a name::

    @task_kind("process")
    class Process(TaskKind[ProcessParams]):
        params_model = ProcessParams

        async def run(self, params, checkpoint, ctx):   # checkpoint: last saved state or None
            ...
            await ctx.checkpoint({"step": n}, done=n)    # commit, then maybe pause/stop here

        async def cleanup(self, params, checkpoint, ctx):  # on cancel or a final failure:
            ...                                              # remove what run() made

Built-in kinds register exactly like a user's: with the decorator in a module named by
``TSM_KIND_MODULES``, or through the ``tsm.kinds`` entry-point group of an installed package.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from app.services.runtime.context import TaskContext, Work

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.config import Settings
    from app.services.files.store import ByteStore
    from app.services.owners.keys import Principal

__all__ = ["KindParams", "TaskContext", "TaskKind", "Work", "load_kinds", "registry", "task_kind"]

logger = logging.getLogger("tsm.kinds")

P = TypeVar("P", bound=BaseModel)


class KindParams(BaseModel):
    """Base for a kind's parameters: unknown fields are a mistake, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


class TaskKind(Generic[P]):
    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]] = KindParams
    description: ClassVar[str] = ""

    async def prepare(self, params: P, principal: Principal, session: AsyncSession, settings: Settings) -> None:
        """Check, at creation time, what can be known before running (raise a TSMError)."""

    async def prepare_with_store(
        self, params: P, principal: Principal, session: AsyncSession, settings: Settings, store: ByteStore | None
    ) -> None:
        """What the runtime calls: :meth:`prepare`, for a kind that reads no stored bytes. A kind
        that does (import_csv reads the upload's first record) overrides this to use the app's
        ByteStore (None: an engine made without one, i.e. the local directory)."""
        await self.prepare(params, principal, session, settings)

    async def run(self, params: P, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        raise NotImplementedError

    async def cleanup(self, params: P, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> None:
        """Remove everything the task made; runs on cancel and after a final failure.

        It runs again if its runner crashed while it ran, so it must be idempotent."""


class KindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, TaskKind[Any]] = {}

    def register(self, name: str, kind: type[TaskKind[Any]]) -> None:
        if name in self._kinds and type(self._kinds[name]) is not kind:
            raise ValueError(f"task kind {name!r} is already registered")
        kind.name = name
        self._kinds[name] = kind()

    def get(self, name: str) -> TaskKind[Any] | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def all(self) -> dict[str, TaskKind[Any]]:
        return dict(self._kinds)


registry = KindRegistry()

K = TypeVar("K", bound=type[TaskKind[Any]])


def task_kind(name: str) -> Any:
    """Class decorator registering a task kind under ``name``."""

    def decorate(cls: K) -> K:
        registry.register(name, cls)
        return cls

    return decorate


# Key of the validation context a dry run sets (``POST /tasks?dry_run=true``): a kind's params may
# then leave out what only the real call can give, such as a file still to be uploaded.
DRY_RUN = "dry_run"

BUILTIN_MODULES = ("app.services.process.kind",)
OPTIONAL_BUILTINS = ("app.services.csv_import.kind", "app.services.csv_export.kind")


def load_kinds(extra_modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import built-in kinds, configured modules and installed ``tsm.kinds`` entry points."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for module in OPTIONAL_BUILTINS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    for module in extra_modules:
        importlib.import_module(module)
    for entry in entry_points(group="tsm.kinds"):
        try:
            entry.load()
        except Exception:  # one broken plug-in must not keep the service down
            logger.exception("could not load task kind plug-in %s", entry.name)
