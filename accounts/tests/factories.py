"""Accounts for tests: users (customers and operators) and their API keys."""

import functools

import factory

from accounts.models import ApiKey, User

DEFAULT_PASSWORD = "correct horse battery staple"


@functools.lru_cache
def password_hash(raw_password: str) -> str:
    """`raw_password` hashed as set_password does (the configured PBKDF2), once per process:
    users share one real hash instead of paying a full hashing (~0.3 s) each."""
    from django.contrib.auth.hashers import make_password

    return make_password(raw_password)


class UserFactory(factory.django.DjangoModelFactory):
    """A customer who logs in with DEFAULT_PASSWORD (or `raw_password`); `operator=True` makes
    a staff superuser, for the admin."""

    class Meta:
        model = User

    class Params:
        operator = factory.Trait(is_staff=True, is_superuser=True)
        raw_password = DEFAULT_PASSWORD

    email = factory.Sequence(lambda n: f"engineer{n}@example.com")
    password = factory.LazyAttribute(lambda user: password_hash(user.raw_password))


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """A key made as the service makes it (api_key_create): its plaintext, shown only once
    in real life, is kept on the instance as `.plaintext` for the test to use."""

    class Meta:
        model = ApiKey

    user = factory.SubFactory(UserFactory)
    name = ""
    expires_at = None

    @classmethod
    def _create(cls, model_class, user, name="", expires_at=None, **kwargs):
        from accounts.services import api_key_create

        if kwargs:
            raise TypeError(f"ApiKeyFactory sets only user, name and expires_at, not {kwargs}")
        api_key, plaintext = api_key_create(user=user, name=name, expires_at=expires_at)
        api_key.plaintext = plaintext
        return api_key
