"""The `alerts:` section of the config file, validated with the same rules as the rest.

Every key is documented in docs/alerts.md ("Configuration"). Errors read
``<file>: alerts.<key>: <message>``. Secrets (the Slack token, the webhook URL) are never config
keys: they come from the environment (SLACK_BOT_TOKEN, SLACK_WEBHOOK_URL).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from pydantic import Field

from analytics.alerts.model import Severity
from analytics.alerts.rules import Channel, RulePack, load_rules
from housekeeping.config import HealthConfig, HousekeepingConfig, parse_section
from housekeeping.config_types import Cron, PositiveDuration, StrictModel, TimeZone


class SummarySettings(StrictModel):
    # 13:00 every day in `timezone` (default: the config's top-level timezone).
    cron: Cron = "0 13 * * *"
    timezone: TimeZone | None = None
    channel: Channel | None = None  # default: alerts.default_channel


class AlertsSettings(StrictModel):
    # Alert states, the notification outbox and silences (SQLAlchemy URL; PostgreSQL in production).
    database_url: str = "sqlite:///var/hk_alerts.db"
    # The rule file; default: the shipped default rule pack (analytics/alerts/default_rules.yaml).
    rules_file: str | None = None
    # How often the alert sensor evaluates every rule and drains the outbox.
    evaluation_interval: PositiveDuration = timedelta(seconds=60)
    default_channel: Channel = "#alerts"
    # Channel per severity, unless a rule names its own.
    channels: dict[Severity, Channel] = Field(default_factory=dict)
    # Slack allows about one message per second per channel.
    min_interval_per_channel: PositiveDuration = timedelta(seconds=1)
    # Longest wait between two attempts to send the same message (backoff doubles up to it).
    max_retry_interval: PositiveDuration = timedelta(minutes=5)
    # The longest silence `hk alerts silence --for` accepts (a forgotten silence hides outages).
    max_silence: PositiveDuration = timedelta(days=30)
    # Sent notifications and expired silences are deleted after this long.
    history_retention: PositiveDuration = timedelta(days=30)
    summary: SummarySettings = SummarySettings()
    # Links to the Dagster UI in messages; default: $DAGSTER_WEBSERVER_URL.
    dagster_webserver_url: str | None = None

    def channel_for(self) -> dict[Severity, str]:
        return {
            severity: self.channels.get(severity, self.default_channel) for severity in Severity
        }

    def webserver_url(self) -> str | None:
        url = self.dagster_webserver_url or os.environ.get("DAGSTER_WEBSERVER_URL") or None
        return url.rstrip("/") if url else None

    def load_rules(self, health: HealthConfig) -> RulePack:
        """The rule pack (alerts.rules_file, else the shipped one), its ``health.<key>``
        thresholds taken from `health` (the config's health: section)."""
        return load_rules(self.rules_file, health)


def parse_alerts_settings(data: Any, source: str = "config") -> AlertsSettings:
    return parse_section(AlertsSettings, data, "alerts", source)


def alerts_settings(config: HousekeepingConfig, source: str = "config") -> AlertsSettings:
    """The validated `alerts:` section of a loaded config."""
    return parse_alerts_settings(config.alerts, source)
