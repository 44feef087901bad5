"""The schema of the API Platform 1.0.0: users with MFA columns (the
seed's 20250101_create_users_table and 20250110_add_mfa_columns).

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute(
        """
        create table users (
            id bigserial primary key,
            email text not null,
            password_hash text not null,
            mfa_enabled boolean not null default false,
            mfa_secret text,
            created_at timestamptz not null default now()
        )
        """
    )


def downgrade():
    op.execute("drop table users")
