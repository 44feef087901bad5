"""Runs the migrations against $DATABASE_URL (online mode only)."""

import os

from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ.get("DATABASE_URL")
if not url:
    raise SystemExit("DATABASE_URL is not set: the runbook's step sets it from a secret")

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        transaction_per_migration=context.config.get_main_option("transaction_per_migration") == "true",
    )
    with context.begin_transaction():
        context.run_migrations()
