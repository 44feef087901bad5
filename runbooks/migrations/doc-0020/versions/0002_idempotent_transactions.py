"""The release's migration: each transaction carries its currency, and an
external id is posted once (a unique index: a ledger holding the same
external id twice fails this migration, as a real one would, and
PostgreSQL undoes the whole revision, which runs in one transaction).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.execute("alter table transactions add column currency text not null default 'USD'")
    op.execute("create unique index transactions_external_id on transactions (external_id)")


def downgrade():
    op.execute("drop index transactions_external_id")
    op.execute("alter table transactions drop column currency")
