"""Pipeline stages: plain functions plus thin Prefect task wrappers."""

from tasks import env  # noqa: F401  (environment defaults prefect must see before it is imported)
