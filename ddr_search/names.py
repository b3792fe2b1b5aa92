"""Domain and module names: slugs, because they become module file names and index keywords."""

from __future__ import annotations

import re

from ddr_search.errors import InputError

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_name(name: object, what: str = "domain") -> str:
    """`name` if it is a slug (1-63 lowercase letters, digits, '-' or '_'), else InputError saying so."""
    if not isinstance(name, str) or not _SLUG.match(name):
        raise InputError(
            f"{what} name {name!r} is not a slug: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name
