"""Context windows (and capabilities) the catalog only assumes, asked of the servers that run
those models.

A local server (llama.cpp ``/props``, Ollama ``/api/show``) knows the window it was started
with; the catalog can only guess it. ``WindowAsker.ask_if_due`` asks, before a decision, for
every window still assumed: all at once, waiting at most timings.WINDOW_ASK_S. Calls that start
meanwhile do not wait; a model whose server did not say is asked again later
(timings.WINDOW_REASK_S, doubling), so a server down or busy at start still teaches its window.
The same servers say what a model can do (Ollama's ``/api/show`` ``capabilities``, llama.cpp's
``/props``): asked in the same round, for every model whose capabilities the config left open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import anyio

from . import timings
from .catalog import Catalog, ModelEntry
from .providers import Provider

__all__ = ["WindowAsker"]

log = logging.getLogger("llm_router.engine")


class WindowAsker:
    def __init__(self, catalog: Catalog, providers: Mapping[str, Provider]) -> None:
        self.catalog = catalog
        self.providers = providers
        self.unasked = [e for e in catalog if not e.context_known and e.provider in providers]
        """Models whose window is only assumed, whose server is to be asked for it."""
        self.abilities_unasked = [e for e in catalog if e.capabilities.askable and e.provider in providers]
        """Models whose capabilities are the protocol's default until their server says."""
        self.ask_at = 0.0  # monotonic time of the next ask
        self._reask_s = timings.WINDOW_REASK_S[0]

    async def ask_if_due(self) -> None:
        if (self.unasked or self.abilities_unasked) and time.monotonic() >= self.ask_at:
            await self._ask()

    async def _ask(self) -> None:
        unasked, self.unasked = self.unasked, []
        abilities, self.abilities_unasked = self.abilities_unasked, []
        told: set[str] = set()
        self.ask_at = time.monotonic() + self._reask_s
        self._reask_s = min(self._reask_s * 2, timings.WINDOW_REASK_S[1])

        async def ask(entry: ModelEntry) -> None:
            try:
                window = await self.providers[entry.provider].context_window(entry.model)
            except Exception:  # whatever a server answers, it only leaves the window assumed
                log.debug("asking %s for its window failed", entry.ref, exc_info=True)
                return
            if window is not None and self.catalog.learn_window(entry.ref, window, "reported by the server"):
                log.info("%s: the server runs it with a %s-token window", entry.ref, window)

        async def ask_abilities(entry: ModelEntry) -> None:
            try:
                said = await self.providers[entry.provider].capabilities(entry.model)
            except Exception:  # as for the window: the default stands
                log.debug("asking %s what it can do failed", entry.ref, exc_info=True)
                return
            if said is not None:
                told.add(entry.ref)
                if self.catalog.learn_capabilities(entry.ref, said, "reported by the server"):
                    log.info("%s: the server says it can take %s", entry.ref, ", ".join(sorted(said)) or "text only")

        with anyio.move_on_after(timings.WINDOW_ASK_S):
            async with anyio.create_task_group() as tg:
                for entry in unasked:
                    tg.start_soon(ask, entry)
                for entry in abilities:
                    tg.start_soon(ask_abilities, entry)
        self.unasked += [e for e in unasked if not e.context_known]
        self.abilities_unasked += [e for e in abilities if e.ref not in told]
