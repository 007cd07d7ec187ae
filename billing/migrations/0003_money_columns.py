"""Credit becomes money (1 of 3): the cents columns beside the runs ones, and study links.

The runs columns get a default and lose their constraints here, before 0004 converts the
rows, so that each step also runs backwards (0005's reverse re-adds them empty, 0004's
reverse fills them, and only then does this one's reverse put their constraints back).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_seed_credit_packs"),
        ("simulations", "0004_studies"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="creditpack", name="credit_pack_runs_positive"),
        migrations.RemoveConstraint(
            model_name="ledgerentry", name="ledger_entry_sign_matches_kind"
        ),
        migrations.RemoveConstraint(model_name="payment", name="payment_credit_pack_has_pack"),
        migrations.AlterField(
            model_name="creditpack", name="runs", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AlterField(
            model_name="ledgerentry", name="runs", field=models.IntegerField(default=0)
        ),
        migrations.AddField(
            model_name="creditpack",
            name="credit_cents",
            field=models.PositiveIntegerField(
                null=True,
                help_text="Credit the pack adds to the balance, in cents (may exceed its price).",
            ),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="amount_cents",
            field=models.IntegerField(null=True, help_text="Change of the balance, in cents."),
        ),
        migrations.AddField(
            model_name="payment",
            name="credit_cents",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Credit a pack payment adds to the balance once paid, in cents.",
            ),
        ),
        migrations.AddField(
            model_name="payment",
            name="cases",
            field=models.PositiveIntegerField(
                blank=True,
                null=True,
                help_text="A study payment: the cases of the study it pays for.",
            ),
        ),
        migrations.AddField(
            model_name="payment",
            name="study",
            field=models.ForeignKey(
                blank=True,
                null=True,
                help_text="The study this payment's token paid for.",
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="payments",
                to="simulations.study",
            ),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="study",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="ledger_entries",
                to="simulations.study",
            ),
        ),
        migrations.AlterField(
            model_name="payment",
            name="purpose",
            field=models.CharField(
                choices=[
                    ("run", "One run (HTTP 402)"),
                    ("credit_pack", "Credit pack"),
                    ("study", "One study (HTTP 402)"),
                ],
                max_length=16,
            ),
        ),
    ]
