"""Who is who: meters, their owners (members) and the names people see for them."""

from __future__ import annotations

from typing import Any

COMMUNITY_ACCOUNTS = {"grid_fees": "grid fees (community account)", "levies": "levies (community account)"}


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
        for registry in (self.members, self.validators):
            entry = registry.get(account)
            if entry is not None and entry.get("name"):
                return entry["name"]
        return account[:8]
