"""The energy application the ledger runs: order book, clearing, settlement, balances, reports."""
