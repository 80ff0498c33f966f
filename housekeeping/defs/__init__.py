"""The housekeeping domain's Dagster shell: assets, checks, resources, jobs, schedules, sensors."""
