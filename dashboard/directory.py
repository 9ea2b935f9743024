"""Who is who: meters, their owners (members) and the names people see for them.

Names are the members' own choice, so two households may choose names that look alike ("Bob",
"Bob<U+200B>", "Вob" with a Cyrillic VE). Labels that look alike (one ``skeleton``) are told apart
by the start of the household's key id, "Bob (8e178a)" (``distinct_labels``); so are names that
mix scripts, and names that read like a community account's ("grid fees (community account)").

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
import re
import unicodedata
from collections.abc import Iterable, Mapping
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


# Characters that look like a Latin letter or digit, by what they look like (a small stdlib-only
# stand-in for Unicode's confusables.txt, UTS #39: Cyrillic, Greek and Armenian letters that
# render like Latin ones, and the Latin look-alikes I/l/1/| and 0/o). Both cases are listed: the
# map is applied before case folding, where "I" (capital i) and "l" (small L) still differ.
_LOOKS_LATIN = str.maketrans(
    {
        **dict.fromkeys("I1|\u0406\u04c0\u04cf\u0399\u0196\u01c0", "l"),
        **dict.fromkeys("0\u041e\u043e\u039f\u03bf\u0555\u0585\u03c3", "o"),
        **dict.fromkeys("\u0410\u0430\u0391\u03b1\u0251", "a"),
        **dict.fromkeys("\u0412\u0432\u0392\u03b2\u042c\u044c", "b"),
        **dict.fromkeys("\u0421\u0441\u03f2\u03f9", "c"),
        **dict.fromkeys("\u0500\u0501", "d"),
        **dict.fromkeys("\u0415\u0435\u0395\u03b5\u0401\u0451", "e"),
        **dict.fromkeys("\u0261\u0581", "g"),
        **dict.fromkeys("\u041d\u043d\u0397\u04ba\u04bb\u0570", "h"),
        **dict.fromkeys("\u0456\u03b9\u0131\u0269\u0457", "i"),
        **dict.fromkeys("\u0408\u0458\u0237\u037f\u03f3", "j"),
        **dict.fromkeys("\u041a\u043a\u039a\u03ba\u0138", "k"),
        **dict.fromkeys("\u041c\u043c\u039c", "m"),
        **dict.fromkeys("\u039d\u03b7\u043f\u0578", "n"),
        **dict.fromkeys("\u0420\u0440\u03a1\u03c1", "p"),
        **dict.fromkeys("\u051a\u051b\u0566", "q"),
        **dict.fromkeys("\u0433\u0280", "r"),
        **dict.fromkeys("\u0405\u0455", "s"),
        **dict.fromkeys("\u0422\u0442\u03a4\u03c4", "t"),
        **dict.fromkeys("\u03bc\u03c5\u057d\u054d", "u"),
        **dict.fromkeys("\u03bd", "v"),
        **dict.fromkeys("\u051c\u051d\u03c9", "w"),
        **dict.fromkeys("\u0425\u0445\u03a7\u03c7", "x"),
        **dict.fromkeys("\u0423\u0443\u04ae\u04af\u03a5\u03b3\u028f", "y"),
        **dict.fromkeys("\u0396\u03b6", "z"),
    }
)
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), which unicodedata lacks:
# characters a renderer may show as nothing (soft hyphen, zero-width space and joiners, the bidi
# controls, variation selectors, fillers, tags).
_IGNORABLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
_SPACES_RE = re.compile(r"\s+")
# scripts that are written together in one name (Japanese; Korean; Chinese with Bopomofo)
_SCRIPTS_TOGETHER = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)


def skeleton(text: str) -> str:
    """What ``text`` looks like, for telling names apart: NFKC (fullwidth and mathematical
    letters read as plain ones), default-ignorable characters removed (zero-width, soft hyphen,
    bidi controls), marks removed (accents, and the stacks of "zalgo" text), letters that look
    Latin read as Latin (``_LOOKS_LATIN``: Cyrillic "В" is "b", "I" is "l"), case folded, "rn"
    read as "m", runs of spaces as one, none at the ends. Two names with one skeleton look alike."""
    text = _IGNORABLE_RE.sub("", unicodedata.normalize("NFKC", text))
    text = "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) not in ("Mn", "Me")
    )
    text = text.translate(_LOOKS_LATIN).casefold().translate(_LOOKS_LATIN).replace("rn", "m")
    return _SPACES_RE.sub(" ", text).strip()


def _script(ch: str) -> str:
    """The script of a letter, as far as its Unicode name tells (its first word: LATIN,
    CYRILLIC, GREEK, ...; CJK ideographs are HAN)."""
    word = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
    return "HAN" if word in ("CJK", "IDEOGRAPHIC") else word


def mixed_script(text: str) -> bool:
    """Whether ``text`` has letters of more than one script (after NFKC; marks, digits, spaces
    and punctuation belong to none), other than scripts written together (Japanese, Korean,
    Chinese with Bopomofo): "Вob" (a Cyrillic VE and Latin letters) does, "Иван" and "山田たろう"
    do not."""
    scripts = {
        _script(ch)
        for ch in unicodedata.normalize("NFKC", text)
        if unicodedata.category(ch) in ("Lu", "Ll", "Lt", "Lo")
    }
    return len(scripts) > 1 and not any(scripts <= together for together in _SCRIPTS_TOGETHER)


def distinct_labels(named: Mapping[str, tuple[str, str]], reserved: Iterable[str] = ()) -> dict[str, str]:
    """``{id: label}`` for ``named`` ``{id: (household key id, label)}`` such that labels of
    different households never look alike (one ``skeleton``): a label that looks like another
    household's, or like a ``reserved`` one (the community accounts'), or that mixes scripts,
    ends in the start of its household's key id, "Bob (8e178a)", and the starts grow by a digit
    until every label differs (a member that names itself "Bob (8e178a)" gets a suffix too). Labels
    of one household (a member and its meters) may be alike; reserved labels keep their text. A
    suffix of the whole key id is unlike any other's, so this ends."""
    digits: dict[str, int] = {}
    for key, label in named.values():
        if mixed_script(label):
            digits[key] = PSEUDONYM_DIGITS

    def shown(key: str, label: str) -> str:
        n = digits.get(key, 0)
        return f"{label} ({key[:n]})" if n else label

    reserved_skeletons = {skeleton(label) for label in reserved}
    for _ in range(40):  # a suffix grows by a digit per round: at most 32 digits
        owners: dict[str, set[str]] = {}
        for key, label in named.values():
            owners.setdefault(skeleton(shown(key, label)), set()).add(key)
        alike = {
            key
            for look, keys in owners.items()
            if len(keys) > 1 or look in reserved_skeletons
            for key in keys
            if digits.get(key, 0) < len(key)
        }
        if not alike:
            break
        for key in alike:
            digits[key] = digits[key] + 1 if key in digits else PSEUDONYM_DIGITS
    return {ident: shown(key, label) for ident, (key, label) in named.items()}


class Directory:
    """Meters and members by key id (from the genesis and the governance state); labels are
    computed once per directory (a directory is made per state height). Labels that would look
    alike are made distinct (``distinct_labels``)."""

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
        # (key id of the household it names, the label before a suffix) of every label shown
        named: dict[str, tuple[str, str]] = {}
        for meter, entry in meters.items():
            owner_id = entry.get("owner", "")
            owner = members.get(owner_id, {})
            name = owner.get("name") or entry.get("name") or meter[:8]
            if meters_of[owner_id] > 1 and entry.get("name"):
                name = f"{name} ({entry['name']})"
            named[meter] = (owner_id if owner_id in members else meter, name)
        for member, entry in members.items():
            if entry.get("name"):
                named[member] = (member, entry["name"])
        for validator, entry in self.validators.items():
            if entry.get("name") and validator not in named:
                named[validator] = (validator, entry["name"])
        shown = distinct_labels(named, reserved=COMMUNITY_ACCOUNTS.values())
        self._labels: dict[str, str] = {meter: shown[meter] for meter in meters}
        self._member_names = {m: shown[m] for m in members if m in shown}
        self._validator_names = {v: shown[v] for v in self.validators if v in shown}

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
        if account in self._validator_names:
            return self._validator_names[account]
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
