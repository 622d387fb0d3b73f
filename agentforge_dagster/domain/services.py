"""What the business sells (plain Python: the CLI's help names the services without pydantic)."""

from __future__ import annotations

from enum import StrEnum


class ServiceKind(StrEnum):
    """What the business sells; each kind has its own deliverable outline."""

    BLOG_POST = "blog_post"
    PRODUCT_DESCRIPTION = "product_description"
    EMAIL_CAMPAIGN = "email_campaign"
    PRESS_RELEASE = "press_release"
