"""The platform's Dagster instance: storage under ``$RRR_HOME/dagster`` with the repo's dagster.yaml."""

import os
import shutil
from pathlib import Path

import dagster as dg

from rrr_platform.settings import Settings

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"


def dagster_home(settings: Settings) -> Path:
    home = settings.home_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_DAGSTER_YAML, home / "dagster.yaml")
    return home


def platform_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance `rrr ui` shows, so runs started from the CLI or the demo appear in the UI."""
    os.environ["DAGSTER_HOME"] = str(dagster_home(settings))
    return dg.DagsterInstance.get()
