"""The alerting part of the code location, merged by the root, housekeeping/definitions.py.

The rule file is loaded here, so a bad rule fails the code location's load with the message
`hk rules check` prints.
"""

from __future__ import annotations

import dagster as dg

from analytics.alerts.defs.checks import build_alert_checks
from analytics.alerts.defs.jobs import daily_summary_job
from analytics.alerts.defs.resources import RESOURCE_KEY, AlertsResource
from analytics.alerts.defs.schedules import build_summary_schedule
from analytics.alerts.defs.sensors import (
    alert_run_failure_sensor,
    alert_watchdog_sensor,
    build_alert_sensor,
)
from analytics.alerts.settings import alerts_settings
from housekeeping.config import HousekeepingConfig


def build_alerts_defs(config: HousekeepingConfig, config_file: str = "") -> dg.Definitions:
    """The alerting jobs, schedule, sensors, resource and one asset check per rule (on the
    analytics dataset it reads) for ``config`` (read from ``config_file``).

    Raises RulesError when the rule file does not load, and ConfigError for a bad ``alerts:``
    section: the code location fails to load with the message ``hk rules check`` prints.
    """
    settings = alerts_settings(config, config_file or "config")
    # Fails the load on a bad rule file, with the same message.
    pack = settings.load_rules(config.health)
    return dg.Definitions(
        asset_checks=build_alert_checks(pack),
        jobs=[daily_summary_job],
        schedules=[build_summary_schedule(settings, config.timezone)],
        sensors=[build_alert_sensor(settings), alert_run_failure_sensor, alert_watchdog_sensor],
        resources={RESOURCE_KEY: AlertsResource(config_file=config_file)},
    )
