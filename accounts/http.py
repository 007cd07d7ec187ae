"""Requests whose user is logged in, as the type checker should see them.

Django and DRF type `request.user` as `User | AnonymousUser`. Behind @login_required (the
portal) or IsAuthenticated (the API's default permission) it is always a User: a view
there annotates its request with one of these classes instead of narrowing by hand. They
are annotations only; no request is ever made of them.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework.request import Request

from accounts.models import User


class AuthenticatedHttpRequest(HttpRequest):
    """A request to a @login_required portal view."""

    user: User


class AuthenticatedRequest(Request):
    """A request to an API view under IsAuthenticated."""

    user: User
