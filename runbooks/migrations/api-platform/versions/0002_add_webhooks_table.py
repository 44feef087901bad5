"""The release's migration (the seed's 20250117_add_webhooks_table): a
webhooks table, and one account per email address, now that webhooks are
delivered per user (a unique index: a database holding two users with the
same email fails this migration, as a real one would, and the revision
before stays in place).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.execute(
        """
        create table webhooks (
            id bigserial primary key,
            user_id bigint not null references users (id) on delete cascade,
            url text not null,
            events text[] not null default '{}',
            created_at timestamptz not null default now()
        )
        """
    )
    op.execute("create unique index users_email on users (email)")


def downgrade():
    op.execute("drop index users_email")
    op.execute("drop table webhooks")
