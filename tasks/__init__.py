"""Pipeline stages: plain functions plus thin Prefect task wrappers.

Importing them changes nothing in the environment: see instructflow.tasks.env.
"""
