"""The plugin manager: hook specifications plus plugins from the ``monai_qc`` entry points."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pluggy

from nnunet_hooks import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "get_plugin_manager"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "monai_qc"


def get_plugin_manager(
    plugins: Iterable[object] = (),
    load_entry_points: bool = True,
    blocked: Iterable[str] = (),
) -> pluggy.PluginManager:
    """A new plugin manager (no global state).

    Args:
        plugins: plugin objects or modules to register directly.
        load_entry_points: also load the plugins installed under the ``monai_qc`` group.
        blocked: names of entry-point plugins not to load.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for name in blocked:
        manager.set_blocked(name)
    for plugin in plugins:
        manager.register(plugin)
    if load_entry_points:
        count = manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        logger.debug("loaded %d plugins from entry points", count)
    return manager
