"""The alerting part of the code location, merged into housekeeping/definitions.py.

The rule file is loaded here, so a bad rule fails the code location's load with the message
`hk rules check` prints.
"""

from __future__ import annotations

import dagster as dg

from analytics.alerts.sensors import (
    AlertsResource,
    alert_run_failure_sensor,
    alert_watchdog_sensor,
    build_alert_sensor,
    build_summary_schedule,
    daily_summary_job,
)
from analytics.alerts.settings import alerts_settings
from housekeeping.config import HousekeepingConfig

RESOURCE_KEY = "alerts"


def build_alerts_definitions(config: HousekeepingConfig, config_file: str = "") -> dg.Definitions:
    settings = alerts_settings(config, config_file or "config")
    settings.load_rules(config.health)  # fail the load on a bad rule file, with the same message
    return dg.Definitions(
        jobs=[daily_summary_job],
        schedules=[build_summary_schedule(settings, config.timezone)],
        sensors=[build_alert_sensor(settings), alert_run_failure_sensor, alert_watchdog_sensor],
        resources={RESOURCE_KEY: AlertsResource(config_file=config_file)},
    )
