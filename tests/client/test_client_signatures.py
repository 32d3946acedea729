"""What ``help()``, ``inspect`` and mypy see of the client's methods: the real call, never ``upload(...)``.

Every public method is an operation generator bound to a driver (``clients._bind``); these tests
hold each method's face to its generator's: the same parameters, the same docstring, the return
type the caller gets, and a progress unit named for every progress callback. No server needed.
"""

from __future__ import annotations

import inspect
import pydoc
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from clients import AsyncClient, Client
from clients._base import ByteProgress, TaskProgress
from clients._bind import Binding, stream
from clients._jobs import Operations
from clients.client import ClientAPI
from tests.helpers.server import ROOT

PUBLIC = sorted(name for name, value in vars(ClientAPI).items() if isinstance(value, Binding))
STREAMS = {name for name in PUBLIC if isinstance(vars(ClientAPI)[name], stream)}


def generator(name: str) -> inspect.Signature:
    return inspect.signature(getattr(Operations, name), eval_str=True)


def result_of(name: str) -> Any:
    """``T`` of the generator's ``Op[T]``, or the item type of a stream."""
    if name in STREAMS:
        return vars(ClientAPI)[name].item
    return get_args(generator(name).return_annotation)[-1]


def test_every_call_of_the_api_is_bound() -> None:
    assert " ".join(PUBLIC) == (
        "cancel check_task create_task delete_file download events export_csv fetch_export file_info get_task"
        " import_csv iter_files iter_tasks kinds list_files list_tasks pause preview_csv resume upload wait"
    )
    assert sorted(STREAMS) == ["events", "iter_files", "iter_tasks"]


@pytest.mark.parametrize("name", PUBLIC)
def test_class_methods_have_the_generators_parameters_and_docstring(name: str) -> None:
    for client in (Client, AsyncClient):
        method = getattr(client, name)
        assert inspect.isroutine(method), f"{client.__name__}.{name} is {method!r}"
        signature = inspect.signature(method)
        assert signature.parameters == generator(name).parameters
        assert method.__name__ == name and method.__doc__ == getattr(Operations, name).__doc__
        assert method.__doc__ and method.__qualname__ == f"{client.__name__}.{name}"


@pytest.mark.parametrize("name", PUBLIC)
def test_return_types_are_what_the_caller_gets(name: str) -> None:
    item = result_of(name)
    sync, coroutine = inspect.signature(getattr(Client, name)), getattr(AsyncClient, name)
    if name in STREAMS:
        assert sync.return_annotation == Iterator[item]
        assert inspect.signature(coroutine).return_annotation == AsyncIterator[item]
        assert not inspect.iscoroutinefunction(coroutine)
    else:
        assert sync.return_annotation == item and item is not inspect.Signature.empty
        assert inspect.signature(coroutine).return_annotation == item  # ``async def`` → awaiting gives T
        assert inspect.iscoroutinefunction(coroutine) and not inspect.iscoroutinefunction(getattr(Client, name))


@pytest.mark.parametrize("name", PUBLIC)
def test_bound_methods_drop_only_the_generators_self(name: str, tmp_path: Path) -> None:
    expected = list(generator(name).parameters.values())[1:]
    client, aclient = Client("http://127.0.0.1:9", cache_dir=tmp_path), AsyncClient("http://127.0.0.1:9")
    try:
        for bound in (getattr(client, name), getattr(aclient, name)):
            assert list(inspect.signature(bound).parameters.values()) == expected
            assert bound.__wrapped__ is getattr(Operations, name)
    finally:
        client.close()


def test_help_shows_the_real_call() -> None:
    text = pydoc.render_doc(Client, renderer=pydoc.plaintext)
    assert "upload(...)" not in text and "operation object" not in text and "stream object" not in text
    for name in PUBLIC:
        assert f" {name}(self" in text
    upload = pydoc.render_doc(Client.upload, renderer=pydoc.plaintext)
    for parameter in ("path: str", "filename:", "checksum: str | None = 'auto'", "resume: bool = True", "on_progress:"):
        assert parameter in upload
    assert "-> clients.models.UploadResult" in upload and "Upload a file with tus" in upload
    awaited = pydoc.render_doc(AsyncClient.upload, renderer=pydoc.plaintext)
    assert "async upload(self, path: str | os.PathLike[str]" in awaited
    events = pydoc.render_doc(AsyncClient.events, renderer=pydoc.plaintext)
    assert "events(self, task_id: str, last_event_id: int = 0) -> collections.abc.AsyncIterator" in events


@pytest.mark.parametrize("name", PUBLIC)
def test_every_progress_callback_names_its_unit(name: str) -> None:
    """Transfers report bytes as ``(done, total)``; waits the task's :class:`Progress`, in its unit."""
    doc = " ".join(getattr(Client, name).__doc__.split())
    for parameter in generator(name).parameters.values():
        if not parameter.name.startswith("on_"):
            continue
        callback = get_args(parameter.annotation)[0]
        assert callback in (ByteProgress, TaskProgress), f"{name}({parameter.name}): {parameter.annotation}"
        if callback == ByteProgress:
            assert f"``{parameter.name}(done, total)``" in doc and "bytes" in doc, doc
        else:
            assert f"``{parameter.name}(progress)``" in doc and ":class:`Progress`" in doc, doc


def test_mypy_sees_results_awaitables_and_iterators(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "uses.py"
    source.write_text(
        textwrap.dedent(
            """
            from clients import AsyncClient, Client

            def uses(tsm: Client, atsm: AsyncClient) -> None:
                reveal_type(tsm.upload)
                reveal_type(atsm.get_task("id"))
                reveal_type(tsm.events("id"))
                reveal_type(atsm.iter_files(page_size=5))
                tsm.get_task(7)
            """
        )
    )
    # The project's own cache (mypy keeps it out of git): warm, this takes a second, not twenty.
    out, _, _ = api.run(["--strict", "--cache-dir", str(ROOT / ".mypy_cache"), str(source)])
    notes = [line.split("Revealed type is ", 1)[1] for line in out.splitlines() if "Revealed type" in line]
    assert notes[0].startswith('"def (path: str | os.PathLike[str], *, filename: str | None =')
    assert notes[0].endswith('-> clients.models.UploadResult"')
    assert notes[1:] == [
        '"typing.Awaitable[clients.models.Task]"',
        '"typing.Iterator[clients.models.Event]"',
        '"typing.AsyncIterator[clients.models.FileInfo]"',
    ]
    assert 'Argument 1 has incompatible type "int"; expected "str"' in out
