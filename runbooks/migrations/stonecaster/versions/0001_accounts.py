"""The schema of StoneCaster 1.0.0: accounts and the sessions they open.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute(
        """
        create table accounts (
            id bigserial primary key,
            email text not null,
            created_at timestamptz not null default now()
        )
        """
    )
    op.execute(
        """
        create table sessions (
            id bigserial primary key,
            account_id bigint not null references accounts (id),
            opened_at timestamptz not null default now()
        )
        """
    )


def downgrade():
    op.execute("drop table sessions")
    op.execute("drop table accounts")
