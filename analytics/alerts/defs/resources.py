"""The resource every alerting sensor and op is given: the loaded config, rules and alert store."""

import dagster as dg

from analytics.alerts.service import AlertRuntime

RESOURCE_KEY = "alerts"


class AlertsResource(dg.ConfigurableResource):
    """Loads config, rules and the alert store when a tick or run starts."""

    config_file: str = ""

    def runtime(self) -> AlertRuntime:
        """A fresh runtime for one tick or op; the caller closes it."""
        return AlertRuntime.load(self.config_file or None)
