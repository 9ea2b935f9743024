"""Plain-language explanations of why an order did not clear fully, from the ledger's
``order_outcome`` and ``clearing`` results of its interval (never from anything else)."""

from __future__ import annotations

from typing import Any

from dashboard.units import energy, price_short


def explain(outcome: dict[str, Any], clearing: dict[str, Any] | None, subunit: str = "ct") -> str:
    """One or two sentences a household understands, for one of its orders."""
    side = outcome["side"]
    wanted, filled, limit = outcome["energy_wh"], outcome["filled_wh"], outcome["limit_price"]
    rest = wanted - filled
    selling = side == "sell"
    rest_goes = (
        f"The remaining {energy(rest)} went to the grid at the feed-in tariff."
        if selling
        else f"The remaining {energy(rest)} came from the grid at the retail price."
    )
    if filled >= wanted:
        return f"Fully matched: {energy(filled)} {'sold to' if selling else 'bought from'} neighbours."
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
    if filled == 0:
        if selling:
            return f"No buyer bid as much as your ask of {mine}. {rest_goes}"
        return f"No seller asked as little as your bid of {mine}. {rest_goes}"
    if selling:
        return (
            f"Neighbours wanted less than was offered at your price: {energy(clearing['bid_wh'])} "
            f"bid against {energy(clearing['ask_wh'])} offered; cheaper and earlier offers were "
            f"served first. {rest_goes}"
        )
    return (
        f"Less was offered than neighbours wanted at your price: {energy(clearing['ask_wh'])} "
        f"offered against {energy(clearing['bid_wh'])} bid; higher and earlier bids were served "
        f"first. {rest_goes}"
    )
