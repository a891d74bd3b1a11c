"""The wallet: a double-entry ledger of every balance change, and the balances it implies."""
