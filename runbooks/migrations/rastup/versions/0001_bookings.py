"""The schema of RastUp 1.0.0: bookings of a city's venues.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute(
        """
        create table bookings (
            id bigserial primary key,
            city text not null,
            venue_id text not null,
            payment_ref text not null,
            booked_at timestamptz not null default now()
        )
        """
    )


def downgrade():
    op.execute("drop table bookings")
