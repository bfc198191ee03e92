"""Partitions shared by every daily asset, so their partition keys line up."""

import dagster as dg

# Daily partitions (UTC) from the first day of history the platform keeps.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2026-09-01", timezone="UTC", end_offset=0)
