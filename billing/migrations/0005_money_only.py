"""Credit becomes money (3 of 3): the runs columns go, the cents ones become required, and
the constraints are restated in cents (plus: one charge per study, a study payment names
its cases)."""

from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_money_from_runs")]

    operations = [
        migrations.AlterField(
            model_name="creditpack",
            name="credit_cents",
            field=models.PositiveIntegerField(
                help_text="Credit the pack adds to the balance, in cents (may exceed its price)."
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="amount_cents",
            field=models.IntegerField(help_text="Change of the balance, in cents."),
        ),
        migrations.RemoveField(model_name="creditpack", name="runs"),
        migrations.RemoveField(model_name="ledgerentry", name="runs"),
        migrations.RemoveField(model_name="payment", name="runs"),
        migrations.AlterModelOptions(
            name="creditpack", options={"ordering": ["credit_cents", "price_cents"]}
        ),
        migrations.AddConstraint(
            model_name="creditpack",
            constraint=models.CheckConstraint(
                condition=Q(credit_cents__gt=0), name="credit_pack_credit_positive"
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.CheckConstraint(
                condition=(
                    Q(kind__in=["purchase", "refund", "grant"], amount_cents__gt=0)
                    | Q(kind__in=["charge", "revocation"], amount_cents__lt=0)
                ),
                name="ledger_entry_sign_matches_kind",
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.UniqueConstraint(
                fields=["study"], condition=Q(kind="charge"), name="one_charge_per_study"
            ),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.CheckConstraint(
                condition=~Q(purpose="credit_pack") | Q(credit_pack__isnull=False),
                name="payment_credit_pack_has_pack",
            ),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.CheckConstraint(
                condition=~Q(purpose="study") | Q(cases__gt=0), name="payment_study_has_cases"
            ),
        ),
    ]
