"""Read-only web dashboard over a node's ledger store."""
