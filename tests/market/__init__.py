"""Tests of the market's pure cores: money, clearing, settlement, statements, `peerwatt clear`."""
