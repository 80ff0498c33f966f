"""The rollups: one module per published dataset family, over the shared engine."""
