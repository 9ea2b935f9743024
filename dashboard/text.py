"""Text that members chose (names, notes, proposal args, an agent's words), shown safely.

- In HTML every such string is isolated, one way for all: the template filter ``isolate`` wraps
  it in ``<bdi>`` (its bidi controls and right-to-left letters cannot reorder the text around
  it: "Mallory<RLO>: yes" stays "...: yes"); where no element may stand (the page title, a
  select's options) ``isolate_text`` wraps it in FIRST STRONG ISOLATE … POP DIRECTIONAL
  ISOLATE, which the Unicode bidi algorithm treats the same way.
- C0 and C1 control characters (but tab, line feed and carriage return, which HTML shows as a
  space) are shown escaped, ``\\u0000``: a NUL or BEL would otherwise be an empty box, or nothing.
  So are the bidi embeddings and overrides (U+202A..U+202E), which would still reverse the rest
  of the name itself (``Oak\\u202eStreet``), and the zero-width characters (U+200B..U+200D,
  U+2060, U+FEFF), which made "Bob<U+200B>" look like "Bob"; marks and isolates stay.
- A name's own isolates and embeddings are closed inside it (``contained``): a name ending in an
  unclosed RIGHT-TO-LEFT ISOLATE would otherwise have our closing PDI close its RLI and leave our
  FSI open over the rest of the sentence; a PDI of the name's own that has no isolate of the name
  to close (it would close ours) is shown escaped, ``\\u2069``.
- ``readable_json``: a value as the JSON a member wrote (not ``tojson``'s HTML-safe escapes,
  which made a serial read ``\\u0027\\"\\u003e``), HTML-escaped by the template, with bidi and
  control characters escaped as JSON escapes; isolated like a name.
- ``for_terminal``: one line for a terminal, with bidi and control characters escaped, so a
  community's name cannot reorder or ring the operator's terminal.
"""

from __future__ import annotations

import json
import re
from typing import Any

from markupsafe import Markup

FSI, PDI = "\u2068", "\u2069"
_CONTROLS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# embeddings and overrides (LRE, RLE, PDF, LRO, RLO) are shown too: inside its <bdi> an
# unclosed RLO would still reverse the rest of the name ("Oak<RLO>Street" read "OakteertS"), the
# old trick to make one name or file name look like another. Marks and isolates, which
# right-to-left names do use, stay: they reorder nothing outside the name.
# Zero-width characters are shown too (found in a QA pass: "Bob<U+200B>" read as "Bob"): ZERO
# WIDTH SPACE, NON-JOINER and JOINER, WORD JOINER and the ZERO WIDTH NO-BREAK SPACE (BOM).
_ZERO_WIDTH = "\u200b-\u200d\u2060\ufeff"
_CONTROL_RE = re.compile(f"[{_CONTROLS}\u202a-\u202e{_ZERO_WIDTH}]")
# in JSON text also the line and paragraph separators, which some viewers break lines at
_JSON_RE = re.compile(f"[{_CONTROLS}{_BIDI}{_ZERO_WIDTH}\u2028\u2029]")
_TERMINAL_RE = re.compile(f"[\x00-\x1f{_CONTROLS}{_BIDI}{_ZERO_WIDTH}\u2028\u2029]")
_ISOLATE_OPENERS = frozenset("\u2066\u2067\u2068")  # LRI, RLI, FSI
_EMBEDDING_OPENERS = frozenset("\u202a\u202b\u202d\u202e")  # LRE, RLE, LRO, RLO
_PDF = "\u202c"


def _escape_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible_controls(text: str) -> str:
    """``text`` with C0/C1 control characters (but tab, LF, CR), the bidi embeddings and
    overrides and the zero-width characters as ``\\u0000`` escapes."""
    return _CONTROL_RE.sub(_escape_char, text)


def contained(text: str) -> str:
    """``text`` with its own isolates and embeddings closed at its end, so that put between FSI
    and PDI it reorders only itself: each isolate (LRI, RLI, FSI) still open at the end gets a
    PDI, each embedding or override (LRE, RLE, LRO, RLO) a PDF, innermost first. A PDI with no
    isolate of ``text`` open would close the FSI around it: it is shown escaped (``\\u2069``).
    Matching follows the Unicode bidi algorithm (UAX #9, X5a-X7): a PDI closes the last open
    isolate and whatever was opened inside it; a PDF closes an embedding only when no isolate
    was opened after it, and does nothing otherwise (inside our FSI it cannot reach outside)."""
    stack: list[str] = []
    out: list[str] = []
    for ch in text:
        if ch in _ISOLATE_OPENERS:
            stack.append(PDI)
        elif ch in _EMBEDDING_OPENERS:
            stack.append(_PDF)
        elif ch == PDI:
            if PDI not in stack:
                out.append("\\u2069")
                continue
            while stack.pop() != PDI:
                pass
        elif ch == _PDF and stack and stack[-1] == _PDF:
            stack.pop()
        out.append(ch)
    out.extend(reversed(stack))
    return "".join(out)


def isolate(value: Any) -> Markup:
    """A member-chosen string for HTML text: escaped, controls shown, in a ``<bdi>``."""
    if value is None:
        return Markup("")
    return Markup("<bdi>%s</bdi>") % visible_controls(str(value))


def isolate_text(value: Any) -> str:
    """A member-chosen string where no element may stand (a title, an option): FSI … PDI
    around it (the template escapes it)."""
    if value is None:
        return ""
    return f"{FSI}{contained(visible_controls(str(value)))}{PDI}"


def isolate_inline(name: str) -> str:
    """A name inside a sentence of plain text (the API's and CSV's notes too): FSI … PDI around
    it only where it could reorder the sentence (bidi controls, right-to-left letters), so
    ordinary names read as they always did. The name's own isolates and embeddings are closed
    inside it (``contained``)."""
    if re.search(f"[{_BIDI}\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]", name):
        return f"{FSI}{contained(name)}{PDI}"
    return name


def json_text(value: Any) -> str:
    """``value`` as readable JSON: as written (no HTML-safe \\u escapes), keys sorted, with
    control, bidi and line-separator characters as JSON escapes."""
    return _JSON_RE.sub(_escape_char, json.dumps(value, ensure_ascii=False, sort_keys=True))


def readable_json(value: Any) -> Markup:
    """``json_text`` for HTML: escaped and isolated (left to right, as JSON reads)."""
    return Markup('<bdi dir="ltr">%s</bdi>') % json_text(value)


def for_terminal(value: Any) -> str:
    """One line for a terminal: control and bidi characters as ``\\u202e`` escapes."""
    return _TERMINAL_RE.sub(_escape_char, str(value))


__all__ = ["contained", "for_terminal", "isolate", "isolate_inline", "isolate_text", "readable_json"]
