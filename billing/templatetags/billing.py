from django import template
from django.contrib.auth.models import AnonymousUser

from accounts.models import User
from billing import selectors

register = template.Library()


@register.simple_tag
def credit_balance(user: User | AnonymousUser | None) -> int:
    """The header's balance: runs prepaid by the logged-in account."""
    if not getattr(user, "is_authenticated", False):
        return 0
    return selectors.credit_balance(user=user)
