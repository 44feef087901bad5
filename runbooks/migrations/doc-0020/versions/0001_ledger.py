"""The schema every ledger workload runs at 1.0.0: posted transactions.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute(
        """
        create table transactions (
            id bigserial primary key,
            external_id text not null,
            account text not null,
            amount_cents bigint not null,
            posted_at timestamptz not null default now()
        )
        """
    )


def downgrade():
    op.execute("drop table transactions")
