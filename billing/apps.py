from django.apps import AppConfig
from django.core.signals import setting_changed

STRIPE_SETTINGS = {"STRIPE_SECRET_KEY", "STRIPE_API_BASE"}


def _reconfigure_stripe(*, setting: str, **_kwargs: object) -> None:
    """Tests switch billing on by overriding settings; the SDK must follow them."""
    if setting in STRIPE_SETTINGS:
        from billing.stripe_api import configure_sdk

        configure_sdk()


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from django.apps import apps

        from billing.stripe_api import configure_sdk

        if apps.is_installed("djstripe"):  # not in the embedded mode; see settings
            from billing import webhook_handlers  # noqa: F401  (connects the dj-stripe signals)

        configure_sdk()
        setting_changed.connect(_reconfigure_stripe, dispatch_uid="billing-stripe-settings")
