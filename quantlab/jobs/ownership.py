"""Who may act on a run or a notification: its owner, or an admin named in ``QUANTLAB_ADMINS``.

One rule for every way in: the REST API (the caller is the Jupyter login), the Python API and the
CLI (the caller is ``QUANTLAB_USER``, else the operating-system user). A single-user install
records every run under that same user, so its owner always may.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from quantlab.errors import NotOwner

__all__ = ["ADMINS_VARIABLE", "admins", "check_owner", "may_act"]

ADMINS_VARIABLE = "QUANTLAB_ADMINS"


def admins() -> frozenset[str]:
    """The users named in ``QUANTLAB_ADMINS`` (comma- or space-separated), read now."""
    raw = os.environ.get(ADMINS_VARIABLE, "")
    return frozenset(name.strip() for name in raw.replace(",", " ").split() if name.strip())


def may_act(owner: Any, caller: str) -> bool:
    """Whether ``caller`` may act on what ``owner`` owns (a thing with no owner: anyone)."""
    return not owner or str(owner) == caller or caller in admins()


def check_owner(doc: Mapping[str, Any], caller: str, action: str, *,
                kind: str = "run") -> None:
    """Raise :class:`NotOwner` unless ``caller`` owns ``doc`` (its ``user``) or is an admin."""
    owner = doc.get("user")
    if may_act(owner, caller):
        return
    item_id = doc.get("id")
    verb, _, rest = action.partition(" ")  # "mark read" -> "mark it read"
    raise NotOwner(
        f"{kind} {item_id} belongs to {owner}: only {owner} or an admin ({ADMINS_VARIABLE}) can "
        f"{verb} it{' ' + rest if rest else ''}; you are {caller}",
        owner=owner, user=caller, action=action, **{f"{kind}_id": item_id},
    )
