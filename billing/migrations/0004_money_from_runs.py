"""Credit becomes money (2 of 3): runs converted to cents at SIMULATION_PRICE_CENTS.

Every ledger entry, pack and pack payment was counted in runs, and a run cost
SIMULATION_PRICE_CENTS (the setting as deployed when this migration runs): a balance of 7
runs becomes 7 x that price, so every account can still pay for exactly as many runs as
before. Backwards, cents become whole runs again (rounded, never to zero: the old ledger
forbade a zero entry), which is exact for every row this migration wrote.
"""

from django.conf import settings
from django.db import migrations
from django.db.models import F


def runs_to_cents(apps, schema_editor):
    price = settings.SIMULATION_PRICE_CENTS
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    CreditPack = apps.get_model("billing", "CreditPack")
    Payment = apps.get_model("billing", "Payment")
    LedgerEntry.objects.update(amount_cents=F("runs") * price)
    CreditPack.objects.update(credit_cents=F("runs") * price)
    Payment.objects.filter(purpose="credit_pack").update(credit_cents=F("runs") * price)


def _runs(cents, price):
    runs = max(1, round(abs(cents) / price))
    return runs if cents >= 0 else -runs


def cents_to_runs(apps, schema_editor):
    price = max(settings.SIMULATION_PRICE_CENTS, 1)
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    CreditPack = apps.get_model("billing", "CreditPack")
    Payment = apps.get_model("billing", "Payment")
    for entry in LedgerEntry.objects.exclude(amount_cents=None).iterator():
        entry.runs = _runs(entry.amount_cents, price)
        entry.save(update_fields=["runs"])
    for pack in CreditPack.objects.exclude(credit_cents=None).iterator():
        pack.runs = _runs(pack.credit_cents, price)
        pack.save(update_fields=["runs"])
    for payment in Payment.objects.filter(purpose="credit_pack").iterator():
        payment.runs = _runs(payment.credit_cents, price)
        payment.save(update_fields=["runs"])


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_money_columns")]

    operations = [migrations.RunPython(runs_to_cents, cents_to_runs)]
