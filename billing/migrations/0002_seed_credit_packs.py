from django.db import migrations

PACKS = [
    {"name": "10 runs", "runs": 10, "price_cents": 900, "currency": "usd"},
    {"name": "50 runs", "runs": 50, "price_cents": 4000, "currency": "usd"},
]


def seed(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    for pack in PACKS:
        CreditPack.objects.get_or_create(name=pack["name"], defaults=pack)


def unseed(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    CreditPack.objects.filter(name__in=[pack["name"] for pack in PACKS], payments=None).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
