"""The Dagster resource of the analytics assets and sensor: config, source database, store."""

from __future__ import annotations

import dagster as dg

from analytics.publish import RollupStore
from analytics.settings import AnalyticsSettings, analytics_settings
from analytics.views import publish_rollup_views
from housekeeping.config import HousekeepingConfig, config_path, database_url, load_config
from housekeeping.database import AppDatabase

# The key the assets, sensors and jobs name the resource by (their ``analytics`` parameter).
RESOURCE_KEY = "analytics"


class AnalyticsResource(dg.ConfigurableResource):
    """``DATABASE_URL`` is read when a run or tick starts (never stored in config or metadata)."""

    config_file: str = ""

    def load(self) -> tuple[HousekeepingConfig, AnalyticsSettings]:
        path = self.config_file or str(config_path())
        config = load_config(path)
        return config, analytics_settings(config, path)

    def app_database(self) -> AppDatabase:
        return AppDatabase(database_url())

    def store(self, config: HousekeepingConfig, settings: AnalyticsSettings) -> RollupStore:
        """The store, with every dataset folder and the current views file in place."""
        store = RollupStore(settings.root_path, settings.database_path)
        publish_rollup_views(store, settings.day_timezone(config), settings.budgets)
        return store
