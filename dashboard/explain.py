"""Plain-language explanations of why an order did not clear fully, from the ledger's
``order_outcome`` and ``clearing`` results of its interval (never from anything else)."""

from __future__ import annotations

from typing import Any

from dashboard.units import energy, price_short


def after_settlement(selling: bool, filled: int, delivery: dict[str, Any] | None) -> str:
    """What became of the energy, from the settlement once the interval is settled (never from
    the cleared amounts: a seller may deliver less than it sold)."""
    generic = (
        "What your meter exports beyond what it delivers to neighbours goes to the grid at the "
        "feed-in tariff."
        if selling
        else "What your meter imports beyond what neighbours deliver comes from the grid at the retail price."
    )
    if delivery is None:
        return generic
    metered = delivery.get("metered_wh")
    if delivery.get("pending_wh"):
        pending = energy(delivery["pending_wh"])
        return f"{pending} cleared, not yet settled against the meter readings. {generic}"
    if delivery.get("unsettled_wh"):
        return (
            "The matched trades stayed unsettled (a meter reading is missing or inconsistent): no money "
            f"moved for them. {generic}"
        )
    if metered is None:
        return f"No usable reading of your meter for this interval yet. {generic}"
    settled = delivery.get("settled_wh") or 0
    grid = max(0, metered - settled)
    verb = "exported" if selling else "imported"
    out = ""
    if filled:
        out = f"Matched {energy(filled)}, delivered {energy(settled)}, paid for {energy(settled)}"
        if settled < filled and metered < filled:
            out += f": your meter {verb} {energy(metered)} in this interval"
        elif settled < filled:
            other = "buyer" if selling else "seller"
            out += f": the {other}'s meter measured less than it traded (shared pro rata)"
        out += ". "
    where = "went to the grid at the feed-in tariff" if selling else "came from the grid at the retail price"
    if grid == 0:
        if selling:
            return out + "None of your export went to the grid."
        return out + "None of your import came from the grid."
    which = "The other" if filled else "All"
    return out + f"{which} {energy(grid)} your meter {verb} {where}."


def explain(
    outcome: dict[str, Any],
    clearing: dict[str, Any] | None,
    subunit: str = "ct",
    delivery: dict[str, Any] | None = None,
) -> str:
    """One or two sentences a household understands, for one of its orders. ``delivery`` (the
    settlement of the meter's trades of the interval on the order's side: ``settled_wh``,
    ``pending_wh``, ``unsettled_wh``, and the metered export or import ``metered_wh``) says what
    became of the energy; without it only what the order book decided is explained."""
    side = outcome["side"]
    wanted, filled, limit = outcome["energy_wh"], outcome["filled_wh"], outcome["limit_price"]
    selling = side == "sell"
    rest_goes = after_settlement(selling, filled, delivery)
    if filled >= wanted:
        to = "sold to" if selling else "bought from"
        return f"Fully matched: {energy(filled)} {to} neighbours. {rest_goes}"
    if clearing is None:
        return "This interval has not been cleared yet."
    others = clearing["bids"] if selling else clearing["asks"]
    if others == 0:
        who = "buyers" if selling else "sellers"
        return f"No {who} in this interval. {rest_goes}"
    mechanism = clearing["mechanism"]
    price = clearing["price"]
    mine = price_short(limit, subunit)
    if mechanism == "community":
        if selling:
            return (
                f"More energy was offered than neighbours asked for at the community price; offers "
                f"were shared pro rata ({energy(filled)} of your {energy(wanted)}). {rest_goes}"
            )
        return (
            f"Less energy was offered than neighbours asked for; it was shared pro rata to demand "
            f"({energy(filled)} of your {energy(wanted)}). {rest_goes}"
        )
    if mechanism == "uniform" and price is not None:
        clearing_price = price_short(price, subunit)
        if selling and limit > price:
            return f"Your ask of {mine} was above the clearing price of {clearing_price}. {rest_goes}"
        if not selling and limit < price:
            return f"Your bid of {mine} was below the clearing price of {clearing_price}. {rest_goes}"
    if clearing["volume_wh"] == 0:  # nothing matched: every bid was below every ask
        if selling:
            return f"No buyer bid as much as your ask of {mine}. {rest_goes}"
        return f"No seller asked as little as your bid of {mine}. {rest_goes}"
    # Some matched, this order not (fully) although its price was within the clearing price (or
    # pay-as-bid has none): the other side's energy ran out before it (a bid above an unfilled
    # ask is no contradiction: a cheaper ask took that bid first). Whether other orders of this
    # side were served first is said only where the ledger shows it (found in a QA pass: "cheaper
    # and earlier offers were served first" of an offer that had got everything the bids took):
    # the interval's volume beyond this order's fill went to other orders of its side. The
    # merit-order walk serves an order only after every better one (docs/market.md), so those
    # were cheaper or earlier.
    if selling:
        short = "Neighbours wanted less than was offered at your price"
        served_first = "cheaper and earlier offers were served first"
        others_got = "what other offers got"
    else:
        short = "Less was offered than neighbours wanted at your price"
        served_first = "higher and earlier bids were served first"
        others_got = "what other bids got"
    volume = clearing.get("volume_wh")
    if volume is None:  # withheld from this viewer, so not 0: something matched
        served = True if filled == 0 else None  # None: what others got is not the viewer's to read
    else:
        served = volume > filled
    if clearing.get("ask_wh") is None or clearing.get("bid_wh") is None:
        # a side of fewer than 3 other households: its sum is not the viewer's to read, and
        # neither is the volume (nor so what of it other orders got, unless this one got none)
        withheld = clearing.get("ask_wh_note") or clearing.get("bid_wh_note")
        because = f"{withheld}: the sums are not shown" if withheld else "the sums are not shown"
        if served is None:
            return f"{short} ({because}, nor {others_got}). {rest_goes}"
        said = f"{short} ({because})"
    else:
        if selling:
            sums = f"{energy(clearing['bid_wh'])} bid against {energy(clearing['ask_wh'])} offered"
        else:
            sums = f"{energy(clearing['ask_wh'])} offered against {energy(clearing['bid_wh'])} bid"
        if served is None:
            return f"{short}: {sums}; {others_got} is not shown. {rest_goes}"
        said = f"{short}: {sums}"
    if served:
        return f"{said}; {served_first}. {rest_goes}"
    if selling:
        went = f"all {energy(volume)} neighbours bought went to your offer (no other offer was served)"
    else:
        went = f"all {energy(volume)} neighbours sold went to your bid (no other bid was served)"
    return f"{said}, and {went}. {rest_goes}"
