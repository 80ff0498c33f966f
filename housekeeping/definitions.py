"""The code location's root: the three domains' Definitions merged, nothing else.

Built from the config file; a config that does not validate fails the code location's load with
the same message `hk config check` prints.
"""

import dagster as dg

from analytics.alerts.defs.definitions import build_alerts_defs
from analytics.defs.definitions import build_analytics_defs
from housekeeping.config import HousekeepingConfig, load_config
from housekeeping.defs.definitions import build_housekeeping_defs


def build_definitions(config: HousekeepingConfig, config_file: str = "") -> dg.Definitions:
    """Housekeeping, analytics and alerts, merged into one code location."""
    return dg.Definitions.merge(
        build_housekeeping_defs(config, config_file),
        build_analytics_defs(config, config_file),
        build_alerts_defs(config, config_file),
    )


defs = build_definitions(load_config())
