"""Who is who: meters, their owners (members) and the names people see for them.

A community chooses how households see their neighbours (``neighbour_names`` in dashboard.toml,
``NEIGHBOUR_NAMES`` in ``create_app``): by name, or by pseudonym. A pseudonym is stable and
public anyway: "Neighbour 3affb7", the start of the meter's key id (longer where two meters
share those digits); a member (a proposer or voter) is named like its meter when it has exactly
one, else "Member <start of its key id>". ``Directory.seen_by`` gives the names as one household
may read them: its own meters and its own member by name, every other household by pseudonym;
the views use it wherever a neighbour is named (trade rows, CSV, receipts, delivery notes, the
per-neighbour summary, governance, block pages).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

COMMUNITY_ACCOUNTS = {"grid_fees": "grid fees (community account)", "levies": "levies (community account)"}
PSEUDONYM_DIGITS = 6


def pseudonyms(ids: Iterable[str], word: str) -> dict[str, str]:
    """``{id: "<word> <first digits of id>"}``: the shortest start of at least
    ``PSEUDONYM_DIGITS`` hex digits that no other id shares, so two neighbours never look alike."""
    ids = sorted(set(ids))
    out = {}
    for i, key in enumerate(ids):
        n = PSEUDONYM_DIGITS
        for other in (ids[i - 1] if i else "", ids[i + 1] if i + 1 < len(ids) else ""):
            while n < len(key) and other[:n] == key[:n]:
                n += 1
        out[key] = f"{word} {key[:n]}"
    return out


class Directory:
    """Meters and members by key id (from the genesis and the governance state); labels are
    computed once per directory (a directory is made per state height)."""

    def __init__(
        self,
        meters: dict[str, dict[str, Any]],
        members: dict[str, dict[str, Any]],
        validators: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.meters = meters
        self.members = members
        self.validators = validators or {}
        meters_of: dict[str, int] = {}
        for entry in meters.values():
            meters_of[entry.get("owner", "")] = meters_of.get(entry.get("owner", ""), 0) + 1
        self._labels: dict[str, str] = {}
        for meter, entry in meters.items():
            owner = members.get(entry.get("owner", ""), {})
            name = owner.get("name") or entry.get("name") or meter[:8]
            if meters_of[entry.get("owner", "")] > 1 and entry.get("name"):
                name = f"{name} ({entry['name']})"
            self._labels[meter] = name
        self._member_names = {m: e["name"] for m, e in members.items() if e.get("name")}

    def owner(self, meter: str) -> str | None:
        entry = self.meters.get(meter)
        return None if entry is None else entry.get("owner")

    def label(self, meter: str) -> str:
        """A household's name as people know it: the owner's name, else the meter's, else its id."""
        found = self._labels.get(meter)
        if found is not None:
            return found
        return COMMUNITY_ACCOUNTS.get(meter, meter[:8])

    def households(self) -> list[tuple[str, str]]:
        """(meter, label) of every enrolled meter, sorted by label."""
        return sorted(self._labels.items(), key=lambda x: (x[1].lower(), x[0]))

    def account_label(self, account: str) -> str:
        """The name of a meter, member, validator or community account (short id if unknown)."""
        if account in COMMUNITY_ACCOUNTS:
            return COMMUNITY_ACCOUNTS[account]
        if account in self._labels:
            return self._labels[account]
        if account in self._member_names:
            return self._member_names[account]
        entry = self.validators.get(account)
        if entry is not None and entry.get("name"):
            return entry["name"]
        return account[:8]

    def seen_by(self, own_meters: Iterable[str]) -> Directory:
        """The names as a household with ``own_meters`` may read them in a community that chose
        pseudonyms: its own meters (and its member) by name, every other meter and member by its
        pseudonym; validators and community accounts keep their names."""
        own = set(own_meters)
        own_members = {self.owner(m) for m in own} - {None}
        of_meters = pseudonyms(self.meters, "Neighbour")
        meters_of: dict[str, list[str]] = {}
        for meter, entry in self.meters.items():
            meters_of.setdefault(entry.get("owner", ""), []).append(meter)
        of_members = pseudonyms(self.members, "Member")
        view = copy.copy(self)
        view._labels = {m: (name if m in own else of_meters[m]) for m, name in self._labels.items()}
        view._member_names = {
            m: self._member_names.get(m, of_members[m])
            if m in own_members
            else (of_meters[meters_of[m][0]] if len(meters_of.get(m, ())) == 1 else of_members[m])
            for m in self.members
        }
        return view
