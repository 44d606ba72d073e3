"""Keep ``--dist loadgroup`` grouping the plugin's items with pytest versions that xdist misses.

pytest-xdist marks a grouped item by appending ``@<group>`` to its node id in the worker
(``item._nodeid = ...``); the controller's scheduler groups on that suffix. pytest 9.2 keeps
the node id in ``item._id`` instead, so with pytest-xdist 3.8 the assignment has no effect and
every item is scheduled on its own: a variant's load items could then be timed on one worker
while another worker predicts with the same variant. After xdist's hook, this sets the suffix
the way the running pytest stores node ids, on the plugin's own items only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def group_names(item: pytest.Item) -> list[str]:
    """The item's ``xdist_group`` names, sorted (as pytest-xdist joins them)."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return sorted(names)


def _set_nodeid(item: Any, nodeid: str) -> None:
    if hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id  # pytest >= 9.2 (where the node id lives)

        item._id = coerce_node_id(nodeid)
    else:
        item._nodeid = nodeid


def keep_groups(config: pytest.Config, items: Iterable[pytest.Item], kind: type) -> None:
    """On an xdist worker under ``--dist loadgroup``, give ``kind`` items their ``@group`` suffix."""
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        return
    for item in items:
        if not isinstance(item, kind) or "@" in item.nodeid:  # not ours, or xdist's suffix took
            continue
        names = group_names(item)
        if names:
            _set_nodeid(item, f"{item.nodeid}@{'_'.join(names)}")


class GroupKeeper:
    """A plugin object: its hook runs after pytest-xdist's (``trylast``), on each worker."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep_groups(config, items, self.kind)
