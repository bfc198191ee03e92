"""The one Definitions object of the code location (workspace.yaml points here).

Each module of ``rrr_platform/defs`` exports what it defines as lists; this file only gathers them.
"""

import dagster as dg

from rrr_platform.defs import bars, features, history, ingest, models
from rrr_platform.defs.jobs import migrate_job
from rrr_platform.defs.resources import default_resources

_MODULES = (ingest, history, bars, features, models)


def _gather(name: str) -> list:
    return [item for module in _MODULES for item in getattr(module, name, [])]


defs = dg.Definitions(
    assets=_gather("ASSETS"),
    asset_checks=_gather("ASSET_CHECKS"),
    jobs=[migrate_job, *_gather("JOBS")],
    schedules=_gather("SCHEDULES"),
    sensors=_gather("SENSORS"),
    resources=default_resources(),
)
