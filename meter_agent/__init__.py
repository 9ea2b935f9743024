"""The household agent next to the meter: Modbus reading, profiles, strategy, outbox, simulator.

Runs on Raspberry Pi class devices: nothing here may import pandas, Flask or the ledger store.
"""
