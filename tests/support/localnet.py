"""An in-process community: keys, a genesis, and several ledgers driven block by block.

The same library calls the network node makes (propose -> validate and seal on each validator ->
commit at quorum), without a broker. Used by tests, benchmarks, the simulator and examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.block import Block
from chain.engine import Ledger
from chain.envelope import Envelope, sign_envelope
from chain.genesis import Genesis, genesis_from_dict
from chain.keys import PrivateKey, generate_private_key, key_id, public_key_sec1


@dataclass
class Party:
    """A key pair with its id, and a sequence counter for the messages it signs."""

    key: PrivateKey
    name: str = ""
    seq: int = 0

    @property
    def id(self) -> str:
        return key_id(self.key.public_key())

    @property
    def sec1_hex(self) -> str:
        return public_key_sec1(self.key.public_key()).hex()

    def sign(
        self, community: str, msg_type: str, body: dict[str, Any], created: int, ttl_s: int = 86400
    ) -> Envelope:
        self.seq += 1
        return sign_envelope(
            self.key,
            type=msg_type,
            community=community,
            seq=self.seq,
            body=body,
            created=created,
            ttl_s=ttl_s,
        )


@dataclass
class LocalCommunity:
    """Keys and genesis of a community whose nodes all run in this process."""

    genesis: Genesis
    validators: list[Party]
    members: list[Party]
    meters: list[Party]
    ledgers: list[Ledger] = field(default_factory=list)

    @property
    def community(self) -> str:
        return self.genesis.community

    def signed_readings(self, count: int, interval: int, created: int) -> list[Envelope]:
        """``count`` signed kv-style readings, round robin over the meters (benchmarks, load tests)."""
        envs = []
        for i in range(count):
            meter = self.meters[i % len(self.meters)]
            body = {"interval": interval, "import_wh": i, "export_wh": 0, "serial": "S", "profile": "p"}
            envs.append(meter.sign(self.community, "reading", body, created=created))
        return envs

    def run_reading_blocks(self, count: int, start: int = 0) -> None:
        """Blocks ``start`` .. ``start + count - 1``, each with one reading per meter (the
        community's genesis time's interval, import_wh 100 + the block's number), block ``b``
        at the genesis time + 10 * (b + 1) s (the verify tests' small ledgers)."""
        t0 = self.genesis.time
        interval = t0 - t0 % 900
        for b in range(start, start + count):
            t = t0 + 10 * (b + 1)
            body = {"interval": interval, "import_wh": 100 + b, "export_wh": 0, "serial": "SN",
                    "profile": "p"}  # fmt: skip
            self.run_block([m.sign(self.community, "reading", body, created=t) for m in self.meters], t)

    def open_ledgers(self, base_dir: str | Path, app_factory) -> list[Ledger]:
        """Create one store per validator under ``base_dir`` (validator-0 is the sequencer)."""
        self.ledgers = [
            Ledger.create(Path(base_dir) / f"validator-{i}", self.genesis, app_factory())
            for i in range(len(self.validators))
        ]
        return self.ledgers

    def run_block(self, txs: list[Envelope], time: int, sealers: list[int] | None = None) -> Block:
        """Propose on the sequencer, seal on ``sealers`` (default all), commit on every ledger."""
        sequencer = self.ledgers[0]
        block = sequencer.propose(txs, time)
        chosen = range(len(self.ledgers)) if sealers is None else sealers
        seals = [self.ledgers[i].seal(block, self.validators[i].key, now=time) for i in chosen]
        for ledger in self.ledgers:
            ledger.commit(block, seals)
        return block

    def commit_as_final(self, block: Block, time: int) -> None:
        """Commit ``block`` on every ledger with every validator's seal signed without validating
        it live: a final block as it comes from a peer, which the checks of a live proposal
        (chain.engine.Ledger._check_proposed_txs) are not asked of, e.g. one made before them."""
        seals = [
            ledger.sign_vote(v.key, "seal", block.height, 0, block.hash.hex(), now=time)
            for ledger, v in zip(self.ledgers, self.validators, strict=True)
        ]
        for ledger in self.ledgers:
            ledger.commit(block, seals)


def make_community(
    *,
    community: str = "oak-street",
    time: int = 1_764_000_000,
    validators: int = 3,
    members: int = 2,
    meters_per_member: int = 1,
    app: str = "kv",
    app_params: dict[str, Any] | None = None,
    capacity_w: int = 10_000,
    quorum: int | None = None,
    serials: list[str] | None = None,
    chain_options: dict[str, Any] | None = None,
) -> LocalCommunity:
    """Fresh keys and a genesis for an in-process community. ``serials`` enrols the meters (in
    member order) with these serials instead of ``SN<member><meter>``: a reading must carry its
    meter's enrolled serial to settle, so a simulated meter's own serial goes here.
    ``chain_options``: more of the genesis [chain] (e.g. max_open_proposals, the bounds)."""
    v_parties = [Party(generate_private_key(), f"validator-{i}") for i in range(validators)]
    m_parties = [Party(generate_private_key(), f"member-{i}") for i in range(members)]
    meter_parties = []
    meter_entries = []
    for i, member in enumerate(m_parties):
        for j in range(meters_per_member):
            meter = Party(generate_private_key(), f"meter-{i}-{j}")
            meter_parties.append(meter)
            meter_entries.append(
                {
                    "key": meter.sec1_hex,
                    "name": meter.name,
                    "serial": serials[len(meter_parties) - 1] if serials else f"SN{i:04d}{j:02d}",
                    "owner": member.id,
                    "capacity_w": capacity_w,
                }
            )
    chain: dict[str, Any] = {"sequencer": v_parties[0].id, **(chain_options or {})}
    if quorum is not None:
        chain["quorum"] = quorum
    genesis = genesis_from_dict(
        {
            "community": {"id": community, "time": time, "app": app},
            "chain": chain,
            "app": app_params or {},
            "validators": [{"key": p.sec1_hex, "name": p.name} for p in v_parties],
            "members": [{"key": p.sec1_hex, "name": p.name} for p in m_parties],
            "meters": meter_entries,
        }
    )
    return LocalCommunity(genesis, v_parties, m_parties, meter_parties)
