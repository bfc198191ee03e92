"""The one Definitions object of the code location (workspace.yaml points here)."""

import dagster as dg

from rrr_platform.defs.jobs import migrate_job
from rrr_platform.defs.resources import default_resources

defs = dg.Definitions(jobs=[migrate_job], resources=default_resources())
