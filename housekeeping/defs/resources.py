"""Dagster resources: the config file, the application database and the run history."""

from __future__ import annotations

import dagster as dg

from housekeeping.config import HousekeepingConfig, config_path, database_url, load_config
from housekeeping.database import AppDatabase
from housekeeping.history import RunHistory


class HousekeepingResource(dg.ConfigurableResource):
    """Everything a housekeeping asset needs; secrets stay in the environment.

    ``DATABASE_URL`` is read when a run starts (never stored in run config or metadata).
    """

    config_file: str = ""

    def load(self) -> HousekeepingConfig:
        return load_config(self.config_file or config_path())

    def app_database(self) -> AppDatabase:
        return AppDatabase(database_url())

    def run_history(self, config: HousekeepingConfig) -> RunHistory:
        return RunHistory.from_config(config)
