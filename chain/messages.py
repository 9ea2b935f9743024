"""The wire protocol's message types: envelope fields and a body schema per type (DESIGN.md).

This is the shared vocabulary of every peer; the rules *about* orders (book, tariffs) live in the
market application, and the governance rules in ``chain.governance``.
"""

from __future__ import annotations

from chain.schema import (
    COMMUNITY_ID,
    HEX64,
    KEY_ID,
    LABEL,
    Any_,
    FreeObj,
    Int,
    List,
    Obj,
    Str,
)

VERSION = 1
SIGNING_PREFIX = b"peerwatt/v1\n"
MAX_MESSAGE_BYTES = 64 * 1024
# A block carries its transactions; it may exceed the 64 KiB limit of every other message.
MAX_BLOCK_BYTES = 8 * 1024 * 1024
MAX_TTL_S = 7 * 24 * 3600
MAX_SKEW_S = 300  # a message created further than this in the future is refused (clock skew)
MAX_ENERGY_WH = 100_000_000  # 100 MWh: far above any household's 15-minute energy
MAX_PRICE = 100_000_000  # micro-units per kWh: 100 currency units per kWh
MAX_COUNTER_WH = 2**53 - 1

MAX_NOTICE_SEQS = 4096  # seqs one notice may confirm (a block holds at most a few per meter)
MAX_GRIDOPS_ROWS = 400  # interval rows per grid operator data message (well within 64 KiB)
GRIDOPS_QUALITIES = ("measured", "estimated", "replaced")

TIME = Int(0, 2**40)
SEQ = Int(0, 2**53 - 1)
ROUND = Int(0, 2**31)  # a consensus round at one height (chain.consensus)
VOTE_HEADER = Str(3, 64, r"nil|[0-9a-f]{64}")  # a block hash, or "nil" (no block)

ENVELOPE_FIELDS = {
    "v": Int(0, 255),
    "type": Str(1, 16, r"[a-z]+"),
    "community": COMMUNITY_ID,
    "signer": KEY_ID,
    "seq": SEQ,
    "created": TIME,
    "expires": TIME,
    "body": Any_(),
    "sig": Str(1, 128),
}

GOV_ACTIONS = (
    "enroll_meter",
    "revoke_meter",
    "add_member",
    "remove_member",
    "add_validator",
    "remove_validator",
    "set_sequencer",
    "set_param",
    "erase_member",
)

BODY_SCHEMAS: dict[str, Obj] = {
    "order": Obj(
        {
            "side": Str(choices=("sell", "buy")),
            "interval": TIME,
            "energy_wh": Int(0, MAX_ENERGY_WH),
            "limit_price": Int(0, MAX_PRICE),
        }
    ),
    "reading": Obj(
        {
            "interval": TIME,
            "import_wh": Int(0, MAX_COUNTER_WH),
            "export_wh": Int(0, MAX_COUNTER_WH),
            "serial": LABEL,
            "profile": LABEL,
        }
    ),
    # the grid operator's validated energy of one meter per interval (signed by an operator the
    # community named; the market decides whether and how it settles on it)
    "gridops": Obj(
        {
            "meter": KEY_ID,
            "metering_point": LABEL,
            "rows": List(
                Obj(
                    {
                        "interval": TIME,
                        "import_wh": Int(0, MAX_ENERGY_WH),
                        "export_wh": Int(0, MAX_ENERGY_WH),
                        "quality": Str(choices=GRIDOPS_QUALITIES),
                    }
                ),
                max_items=MAX_GRIDOPS_ROWS,
            ),
        }
    ),
    "propose": Obj(
        {"action": Str(choices=GOV_ACTIONS), "args": FreeObj(), "deadline": TIME},
        {"note": Str(0, 280)},
    ),
    "vote": Obj({"proposal": HEX64, "vote": Str(choices=("yes", "no"))}),
    "block": Obj(
        {
            "height": Int(0, 2**53 - 1),
            "prev": HEX64,
            "time": TIME,
            "tx_root": HEX64,
            "result_root": HEX64,
            "state_root": HEX64,
            "sequencer": KEY_ID,
            "round": ROUND,
            "txs": List(Obj(dict.fromkeys(ENVELOPE_FIELDS, Any_())), max_items=100_000),
            "results": List(Any_(), max_items=1_000_000),
        },
        # on the blocks topic a block is a proposal: the round it is proposed in, and the round
        # in which a quorum prevoted for it before (-1: none); absent in catch-up replies
        {"proposal_round": ROUND, "valid_round": Int(-1, 2**31)},
    ),
    # consensus votes (chain.consensus): a prevote, and a precommit called a seal; a quorum of
    # seals of one round for a header makes its block final
    "prevote": Obj({"height": Int(0, 2**53 - 1), "round": ROUND, "header": VOTE_HEADER}),
    "seal": Obj({"height": Int(0, 2**53 - 1), "round": ROUND, "header": VOTE_HEADER}),
    # validator -> one meter's agent (never a transaction): which of its messages the ledger
    # refused for good, and why; see chain/notice.py
    "notice": Obj(
        {
            "meter": KEY_ID,
            "seqs": List(SEQ, max_items=MAX_NOTICE_SEQS),
            "refused": Str(1, 64, r"[a-z0-9_]+"),
        }
    ),
}

# Fields of each body that hold an interval start and must be aligned to the community's interval.
INTERVAL_FIELDS: dict[str, tuple[str, ...]] = {"order": ("interval",), "reading": ("interval",)}


def max_bytes(message_type: str) -> int:
    """The size limit of a message of this type, in bytes."""
    return MAX_BLOCK_BYTES if message_type == "block" else MAX_MESSAGE_BYTES
