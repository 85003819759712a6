"""Beam's fixed cost per build, cut without changing what a pipeline computes: the garbage collector kept off the
imported modules, each options view built once, each DoFn's state/timer introspection done once.

Measured on a warm 39-page `build webcrawl` (`bench/bench_pretrain.py` figures in docs/pretraining.md): Beam spent
~1.5 CPU-s building, translating and running the ~80 transforms, of which ~0.27 parsing options views and ~0.45
inspecting DoFn method signatures.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

T = TypeVar("T", bound=PipelineOptions)

# Young-generation threshold while a build runs (CPython's default: a collection every 700 new container objects).
# With the imports frozen, collections took 0.16 CPU-s of a 3,000-page web-crawl build at 700, 0.10 at this.
GC_YOUNG_THRESHOLD = 10_000


_lock = threading.Lock()
_users: dict[str, int] = {}  # name -> builds of this process inside that cut now
_undo: dict[str, Callable[[], None]] = {}


@contextlib.contextmanager
def _while_building(name: str, apply: Callable[[], Callable[[], None]]) -> Iterator[None]:
    """`apply()` when the first of overlapping builds (several threads of one process) enters, the undo it returns
    when the last one leaves, in whatever order they leave."""
    with _lock:
        _users[name] = _users.get(name, 0) + 1
        if _users[name] == 1:
            _undo[name] = apply()
    try:
        yield
    finally:
        with _lock:
            _users[name] -= 1
            if not _users[name]:
                _undo.pop(name)()


def quiet_gc(young: int = GC_YOUNG_THRESHOLD) -> contextlib.AbstractContextManager[None]:
    """While a build runs: the objects alive now (the imported modules: Beam, pyarrow, ...) are frozen out of the
    garbage collector's scans (`gc.freeze`), and young collections wait for `young` new container objects (never
    fewer than the process had set). Both are undone when the (last) build ends, so a process that goes on collects
    as before; a process that had frozen objects itself (a pre-fork server) keeps its own freeze and nothing more is
    frozen.

    Without it the collector rescans every imported module's objects in its older-generation passes: 0.5 of a
    3,000-page web-crawl build's ~12 CPU-s, 0.25 of a 1M-passage `build msmarco`; 0.1 and 0.03 with it. Nothing
    is freed later than reference counting frees it; only cyclic garbage waits a little longer.
    """

    def apply() -> Callable[[], None]:
        threshold = gc.get_threshold()
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        gc.set_threshold(max(young, threshold[0]), *threshold[1:])

        def undo() -> None:
            gc.set_threshold(*threshold)
            if freeze:
                gc.unfreeze()

        return undo

    return _while_building("gc", apply)


class ViewCachingOptions(PipelineOptions):
    """Beam's PipelineOptions, each `view_as(cls)` view built once and handed out again.

    Beam asks for a view ~500 times while it builds and runs one pipeline (its type checks ask for TypeOptions per
    transform), and each new view builds an argparse parser and parses every flag again: ~0.27 CPU-s a build
    (0.3-0.5 of a 100-passage `build msmarco`'s CPU). A view keeps no values of its own (they live in the
    `_all_options` dict it shares with this object, written through by any view), so the same view answers exactly
    as a new one would. Declares no options of its own.
    """

    def view_as(self, cls: type[T]) -> T:
        views = self.__dict__.setdefault("_views", {})  # not via setattr: PipelineOptions only takes option names
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view


def memo_dofn_specs() -> contextlib.AbstractContextManager[None]:
    """While a build runs, Beam's `userstate.get_dofn_specs(dofn)` (the DoFn's state and timer parameters) is
    worked out once per DoFn object and answered from memory after that.

    Beam finds them by taking `inspect.signature` of every method of the DoFn (~35, most inherited), and asks
    6-8 times per DoFn while it builds, translates and runs a pipeline: ~470 times in a web-crawl build, 0.45 of
    its ~1.5 CPU-s fixed cost. The answer depends only on the object's methods, which do not change, so a second
    ask gets a copy of the first answer. Entries hold the DoFn weakly (a new object at a reused id is worked out
    afresh); a DoFn that cannot be weakly referenced is never remembered. Undone when the (last) build ends.
    """

    def apply() -> Callable[[], None]:
        original = userstate.get_dofn_specs
        memo: dict[int, tuple[weakref.ref, tuple[set, set]]] = {}

        def dofn_specs(dofn: Any) -> tuple[set, set]:
            hit = memo.get(id(dofn))
            if hit is None or hit[0]() is not dofn:
                specs = original(dofn)
                try:
                    hit = memo[id(dofn)] = (weakref.ref(dofn), specs)
                except TypeError:  # not weakly referenceable: not remembered
                    return specs
            return set(hit[1][0]), set(hit[1][1])

        userstate.get_dofn_specs = dofn_specs

        def undo() -> None:
            userstate.get_dofn_specs = original

        return undo

    return _while_building("specs", apply)
