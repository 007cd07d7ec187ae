"""Transitional: DomainError now lives in core.errors (and problem+json in core.problems).

Kept only until billing's and simulations' services, being split into packages, import
core.errors themselves; then this module goes.
"""

from core.errors import DomainError

__all__ = ["DomainError"]
