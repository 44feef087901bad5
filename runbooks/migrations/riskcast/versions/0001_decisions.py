"""The schema of RISKCAST 1.0.0: risk decisions.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute(
        """
        create table decisions (
            id bigserial primary key,
            request_id text not null,
            score numeric not null,
            decided_at timestamptz not null default now()
        )
        """
    )


def downgrade():
    op.execute("drop table decisions")
