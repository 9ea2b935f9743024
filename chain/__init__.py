"""Trust layer: keys, canonical JSON, signed envelopes, Merkle trees, blocks, seals and the store.

Knows nothing about energy: the ledger runs an application object handed to it.
"""
