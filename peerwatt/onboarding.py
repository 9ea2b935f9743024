"""Onboarding: a household's signed join request, sequence numbers taken from a node's store,
the proposals that concern a household, and the genesis text `peerwatt community init` writes.

A join request is a short text block a household hands to a validator (file, e-mail or a QR code):

    -----BEGIN PEERWATT JOIN REQUEST-----
    community: oak-street
    name: Household 7
    member: 02ab...            the member key (compressed SEC1 hex): votes, balances
    meter: 03cd...             the meter key: signs the agent's orders and readings
    serial: 220012345          the meter's serial
    profile: sdm630            the meter profile the agent reads
    capacity_w: 11000          the connection's maximum power (W)
    created: 1764000000
    signature: <base64url r||s by the member key>
    meter_signature: <base64url r||s by the meter key>
    -----END PEERWATT JOIN REQUEST-----

The signature covers ``b"peerwatt/join-request/v1\\n" + JCS(fields without the signatures)``; the
meter signature covers ``b"peerwatt/join-request/v1/meter\\n"`` + the same JCS: the household holds
the meter key it names (without it, a member's request could name another household's meter
public key, and an admitted request would enrol that meter under the wrong owner, its earnings
credited to them: found in a QA pass).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chain.canonical import MAX_SAFE_INTEGER, CanonicalError, canonical_bytes, check_value
from chain.genesis import GenesisError, check_serial, default_quorum
from chain.keys import KeyFileError, PrivateKey, key_id, load_public_key, public_key_sec1
from chain.schema import COMMUNITY_ID, SchemaError
from chain.signature import SignatureError, sign, verify

BEGIN = "-----BEGIN PEERWATT JOIN REQUEST-----"
END = "-----END PEERWATT JOIN REQUEST-----"
_DOMAIN = b"peerwatt/join-request/v1\n"
_METER_DOMAIN = b"peerwatt/join-request/v1/meter\n"
_SIGNATURES = ("signature", "meter_signature")
_FIELDS = ("community", "name", "member", "meter", "serial", "profile", "capacity_w", "created")
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # the ones str.splitlines splits a line at


class JoinRequestError(ValueError):
    """A join request that cannot be used (one line naming the problem)."""


@dataclass(frozen=True)
class JoinRequest:
    community: str
    name: str
    member: str  # compressed SEC1 hex of the member key
    meter: str  # compressed SEC1 hex of the meter key
    serial: str
    profile: str
    capacity_w: int
    created: int
    signature: str = ""
    meter_signature: str = ""

    @property
    def member_id(self) -> str:
        return key_id(load_public_key(self.member))

    @property
    def meter_id(self) -> str:
        return key_id(load_public_key(self.meter))

    def fields(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _SIGNATURES:
            data.pop(name)
        return data

    def signed_bytes(self) -> bytes:
        return _DOMAIN + canonical_bytes(self.fields())

    def meter_signed_bytes(self) -> bytes:
        return _METER_DOMAIN + canonical_bytes(self.fields())

    def text(self) -> str:
        lines = [BEGIN] + [f"{name}: {getattr(self, name)}" for name in (*_FIELDS, *_SIGNATURES)]
        return "\n".join([*lines, END]) + "\n"


def make_join_request(
    member_key: PrivateKey,
    meter_key: PrivateKey,
    *,
    community: str,
    name: str,
    serial: str,
    profile: str,
    capacity_w: int,
    created: int | None = None,
) -> JoinRequest:
    """A join request signed by the household's member key and by its meter key."""
    request = JoinRequest(
        community=community,
        name=name,
        member=public_key_sec1(member_key.public_key()).hex(),
        meter=public_key_sec1(meter_key.public_key()).hex(),
        serial=serial,
        profile=profile,
        capacity_w=capacity_w,
        created=int(time.time()) if created is None else created,
    )
    check_fields(request)
    return JoinRequest(
        **request.fields(),
        signature=sign(member_key, request.signed_bytes()),
        meter_signature=sign(meter_key, request.meter_signed_bytes()),
    )


def check_fields(request: JoinRequest) -> None:
    """Raise JoinRequestError unless every field could go into the governance proposals."""
    for field, value in request.fields().items():  # what the signed canonical JSON can carry
        try:
            check_value(value)
        except CanonicalError as exc:
            if exc.reason == "integer_out_of_range":
                raise JoinRequestError(f"{field} is out of range (at most {MAX_SAFE_INTEGER})") from None
            raise JoinRequestError(f"{field}: {exc}") from None
    for field, value in request.fields().items():  # what the request's text reads back unchanged
        if isinstance(value, str):
            _check_one_line(field, value)
    try:
        COMMUNITY_ID.check(request.community, "community")
        check_serial(request.serial, "serial")
    except (SchemaError, GenesisError) as exc:
        raise JoinRequestError(str(exc)) from None
    for name in ("member", "meter"):
        try:
            load_public_key(getattr(request, name))
        except KeyFileError as exc:
            raise JoinRequestError(f"{name}: {exc}") from None
    if request.member == request.meter:
        raise JoinRequestError("the member key and the meter key must be two different keys")
    if not 0 < len(request.name) <= 64:
        raise JoinRequestError("name must be 1-64 characters")
    if not 0 < len(request.profile) <= 64 or any(c.isspace() for c in request.profile):
        raise JoinRequestError("profile must be a profile name without spaces")
    if request.capacity_w <= 0:
        raise JoinRequestError("capacity_w must be a positive number of watts")


def _check_one_line(field: str, value: str) -> None:
    """JoinRequestError naming ``field`` and the character unless ``value`` reads back unchanged
    from its line of a request's text, which parse_join_request splits at every line break and
    strips of white space at both ends, and which ends at the first END line (found in a QA pass:
    a name ending in a space, or holding U+2028, made a request that was refused when read, as
    changed or as an unexpected line)."""
    if END in value:
        raise JoinRequestError(f"{field} holds {END}, which would end the request's text there")
    breaks = [c for c in value if c in _LINE_BREAKS]
    if breaks:
        raise JoinRequestError(
            f"{field} holds a line break (U+{ord(breaks[0]):04X}): a request carries each field on one line"
        )
    for end, c in (("starts", value[:1]), ("ends", value[-1:])):
        if c.isspace():
            raise JoinRequestError(
                f"{field} {end} with a space character (U+{ord(c):04X}), which a request's text drops"
            )


def parse_join_request(text: str, *, own: bool = False) -> JoinRequest:
    """Parse and verify a join request (its member signature, and its meter signature);
    JoinRequestError names the problem.

    ``own``: the household's agent reading its own request for its enrolment (it holds the meter
    key itself, which is what the meter signature proves to the community), where a request made
    before requests carried a meter signature is taken: found in a QA pass of updates, every agent
    of a household admitted before then refused to start, and the advice it gave made new keys."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise JoinRequestError(f"no join request found (expected a block starting with {BEGIN})")
    values: dict[str, str] = {}
    for line in text[start + len(BEGIN) : end].splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or name not in (*_FIELDS, *_SIGNATURES):
            raise JoinRequestError(f"unexpected line in the join request: {line.strip()[:60]!r}")
        if name in values:
            raise JoinRequestError(f"{name} appears twice in the join request")
        values[name] = value.strip()
    missing = [n for n in (*_FIELDS, "signature") if n not in values]
    if not missing and "meter_signature" not in values and not own:
        raise JoinRequestError(
            "the join request lacks meter_signature (the meter key's proof that this household "
            "holds it): made by an older peerwatt, or changed; make it again with `peerwatt agent "
            "join-request` (the household's member key and meter key)"
        )
    if missing:
        raise JoinRequestError(f"the join request lacks {', '.join(missing)}")
    try:
        capacity_w, created = int(values["capacity_w"]), int(values["created"])
    except ValueError:
        raise JoinRequestError("capacity_w and created must be whole numbers") from None
    request = JoinRequest(
        community=values["community"],
        name=values["name"],
        member=values["member"],
        meter=values["meter"],
        serial=values["serial"],
        profile=values["profile"],
        capacity_w=capacity_w,
        created=created,
        signature=values["signature"],
        meter_signature=values.get("meter_signature", ""),
    )
    check_fields(request)
    try:
        verify(load_public_key(request.member), request.signed_bytes(), request.signature)
    except SignatureError as exc:
        raise JoinRequestError(
            f"the join request's signature does not verify ({exc.reason}): it was changed or not "
            "signed by its member key"
        ) from None
    if not request.meter_signature:  # (own, made before meter signatures)
        return request
    try:
        verify(load_public_key(request.meter), request.meter_signed_bytes(), request.meter_signature)
    except SignatureError as exc:
        raise JoinRequestError(
            f"the join request's meter signature does not verify ({exc.reason}): the meter key it "
            "names is not one this household holds (or the request was changed)"
        ) from None
    return request


def read_join_request(path: Path, *, own: bool = False) -> JoinRequest:
    """:func:`parse_join_request` of the file ``path``."""
    try:
        return parse_join_request(path.read_text(), own=own)
    except OSError as exc:
        raise JoinRequestError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise JoinRequestError(f"{path} is not a text file") from None


# -- the chain state a node holds ------------------------------------------------------------------


def next_seq(chain: dict[str, Any], signer: str, now_ms: int | None = None) -> int:
    """The seq for a new transaction of ``signer``: above the highest the ledger accepted from it,
    and at least the clock in milliseconds (as agents start), so two commands never collide."""
    saved = chain["seqs"].get(signer)
    highest = int(saved[0]) if saved else -1
    clock = int(time.time() * 1000) if now_ms is None else now_ms
    return max(highest + 1, clock)


def concerns(proposal: dict[str, Any], member_ids: set[str], meter_ids: set[str], keys: set[str]) -> bool:
    """Whether an open proposal is about these members / meters (by key id or public key)."""
    args = proposal["args"]
    action = proposal["action"]
    if action in ("add_member", "enroll_meter"):
        try:
            kid = key_id(load_public_key(args["key"]))
        except (KeyFileError, KeyError, AttributeError):
            return False
        return kid in member_ids or kid in meter_ids or args["key"] in keys
    if action in ("remove_member", "erase_member"):
        return args.get("member") in member_ids
    if action == "revoke_meter":
        return args.get("meter") in meter_ids
    return False


# -- quorum ------------------------------------------------------------------------------------------


def quorum_sentence(n: int) -> str:
    """One sentence on quorum and fault tolerance for ``n`` validators."""
    q = default_quorum(n)
    tolerated = n - q
    return f"with n validators a block needs floor(2n/3)+1 seals, so n={n} needs {q} and tolerates " + (
        "no failure" if tolerated == 0 else f"{tolerated} validator(s) down"
    )


def describe_interval(interval_s: int) -> str:
    """'15 minutes', '1 minute', '30 seconds', '1 hour'."""
    if interval_s % 3600 == 0:
        n, unit = interval_s // 3600, "hour"
    elif interval_s % 60 == 0:
        n, unit = interval_s // 60, "minute"
    else:
        n, unit = interval_s, "second"
    return f"{n} {unit}{'' if n == 1 else 's'}"


def check_genesis_inputs(n_validators: int, interval_s: int, feed_in: int, retail: int) -> None:
    """Raise GenesisError with one line for inputs a community cannot start with."""
    if n_validators < 1:
        raise GenesisError("a community needs at least 1 validator")
    if interval_s <= 0 or 86_400 % interval_s:
        raise GenesisError(f"--interval {interval_s}: the interval must divide a day (e.g. 900, 300, 60)")
    if interval_s < 30:
        raise GenesisError(
            f"--interval {interval_s}: at least 30 seconds (meters are polled every few seconds)"
        )
    if not 0 < feed_in <= retail:
        raise GenesisError("the feed-in price must be positive and at most the retail price")
