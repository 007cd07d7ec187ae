from django import template
from django.contrib.auth.models import AnonymousUser

from accounts.models import User
from billing import selectors
from billing.models import money_text

register = template.Library()


@register.simple_tag
def credit_balance(user: User | AnonymousUser | None) -> str:
    """The header's balance: money prepaid by the logged-in account, as text ("$12.34")."""
    if not getattr(user, "is_authenticated", False):
        return money_text(0)
    return selectors.credit_balance_text(user=user)
