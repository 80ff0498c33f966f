"""The Dagster shell of analytics: assets, jobs, schedules and sensors over the plain core."""
