"""Helpers the blueprints share: services, the viewer, permission checks, the ledger's day.

Request parameters are parsed by dashboard.params (bounded; a bad value is a 400)."""

from __future__ import annotations

from datetime import date

from flask import abort, current_app
from flask_login import current_user

from dashboard.accounts import User
from dashboard.directory import Directory
from dashboard.params import parse_key_id
from dashboard.services import Services
from dashboard.timeutil import local_date


def services() -> Services:
    return current_app.extensions["peerwatt"]


def viewer() -> User | None:
    """The logged-in user, or None."""
    return current_user if current_user.is_authenticated else None


def own_meters() -> frozenset[str]:
    user = viewer()
    return user.meters if user is not None else frozenset()


def names() -> Directory:
    """Who is who as the viewer may read it: by name, or, where the community chose pseudonyms
    (``NEIGHBOUR_NAMES``), every household but the viewer's own by its pseudonym. Admins (the
    community's coordinators) see names."""
    directory = services().directory()
    user = viewer()
    if current_app.config["NEIGHBOUR_NAMES"] != "pseudonyms" or (user is not None and user.is_admin):
        return directory
    return directory.seen_by(own_meters())


def pseudonyms_view() -> Directory | None:
    """The viewer's names where the community chose pseudonyms and the viewer is no admin: what
    an add_member proposal's name must be replaced with (with the member's key it would undo
    the pseudonym); None where names are shown."""
    user = viewer()
    if current_app.config["NEIGHBOUR_NAMES"] != "pseudonyms" or (user is not None and user.is_admin):
        return None
    return names()


def require_meter(meter: str) -> User:
    """The viewer if they may see ``meter`` (their own, or admin); 403 otherwise, also for
    meters that do not exist (a guessed id learns nothing)."""
    user = viewer()
    if user is None:
        abort(401)
    parse_key_id("meter", meter)
    if not user.may_see(meter):
        abort(403, "This household's data is not yours to see.")
    if meter not in services().ledger.meters():
        abort(404, "No such meter in this community.")
    return user


def now() -> int:
    """Ledger time (the app's CLOCK: the wall clock, or the demo's accelerated one)."""
    return int(current_app.config["CLOCK"]())


def ledger_today() -> date:
    """The community-local day of the last final block."""
    ledger = services().ledger
    return local_date(ledger.head().time, ledger.community.tz)
