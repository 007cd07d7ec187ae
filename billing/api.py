"""The account and payments API: what a run and a study's case cost the key's account and
what it holds (money); a caller polls its Payment until it is paid, then reads the token.

The account endpoint is here, not in accounts, because it shows billing's balance and
price: billing may import accounts, accounts never imports billing.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from billing import selectors
from billing.models import Payment, money_text
from billing.selectors import billing_mode, credit_balance, simulation_price, study_case_price
from core.openapi import PriceSerializer, errors


class AccountApi(APIView):
    """Who the key belongs to, what it holds (money) and what runs and studies cost."""

    @extend_schema_serializer(component_name="Account")
    class OutputSerializer(serializers.Serializer[dict[str, Any]]):
        email = serializers.EmailField()
        balance_cents = serializers.IntegerField(help_text="Prepaid credit, in cents.")
        balance = serializers.CharField(help_text='The same as people read it: "$12.34".')
        credit_balance = serializers.IntegerField(
            help_text=(
                "Deprecated (credit is money now): how many whole runs the balance pays "
                "for at today's price."
            )
        )
        price = PriceSerializer(help_text="What one run costs.")
        study_case_price = PriceSerializer(help_text="What one case of a study costs.")
        billing_mode = serializers.ChoiceField(choices=["off", "test", "live"])

    @extend_schema(
        operation_id="account_retrieve",
        summary="Your account",
        description=(
            "The key's e-mail, its prepaid credit (money), the price of a run and of a "
            "study's case, billing mode."
        ),
        tags=["account"],
        responses={200: OutputSerializer, **errors()},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        balance = credit_balance(user=request.user)
        data = {
            "email": request.user.email,
            "balance_cents": balance,
            "balance": money_text(balance),
            "credit_balance": balance // max(settings.SIMULATION_PRICE_CENTS, 1),
            "price": simulation_price(),
            "study_case_price": study_case_price(),
            "billing_mode": billing_mode(),
        }
        return Response(self.OutputSerializer(data).data)


class PaymentOutputSerializer(serializers.ModelSerializer[Payment]):
    amount = serializers.CharField()
    credit_pack = serializers.SerializerMethodField()
    simulation = serializers.UUIDField(source="simulation_id", allow_null=True)

    class Meta:
        model = Payment
        fields = [
            "id",
            "purpose",
            "status",
            "amount",
            "amount_cents",
            "currency",
            "cases",
            "credit_cents",
            "credit_pack",
            "checkout_url",
            "expires_at",
            "created_at",
            "paid_at",
            "simulation",
            "study",
        ]
        extra_kwargs = {
            "cases": {"help_text": "A study payment: its token pays for a study of this many."},
            "credit_cents": {"help_text": "A credit pack payment: credit it adds once paid."},
        }

    study = serializers.UUIDField(source="study_id", allow_null=True)

    def get_credit_pack(self, payment: Payment) -> dict[str, Any] | None:
        pack = payment.credit_pack
        if pack is None:
            return None
        return {"id": pack.pk, "name": pack.name, "credit": payment.credit_text}

    def to_representation(self, payment: Payment) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(payment)
        if payment.token:
            # Only the owner ever gets here: the view looks the payment up by owner.
            when = serializers.DateTimeField()
            data.update(
                token=payment.token,
                token_status=payment.token_state,
                token_expires_at=(
                    when.to_representation(payment.token_expires_at)
                    if payment.token_expires_at
                    else None
                ),
                token_used_at=(
                    when.to_representation(payment.token_used_at) if payment.token_used_at else None
                ),
            )
        return data


@extend_schema_serializer(component_name="Payment")
class PaidPaymentSerializer(PaymentOutputSerializer):
    """Schema only: the token fields a payment has once paid (shown to its owner only)."""

    token = serializers.CharField(
        required=False,
        help_text="Send as `Payment-Token` to pay for one run (a study payment: one study).",
    )
    token_status = serializers.ChoiceField(
        choices=["unused", "used", "expired", "void"], required=False
    )
    token_expires_at = serializers.DateTimeField(required=False)
    token_used_at = serializers.DateTimeField(required=False, allow_null=True)

    class Meta(PaymentOutputSerializer.Meta):
        fields = [
            *PaymentOutputSerializer.Meta.fields,
            "token",
            "token_status",
            "token_expires_at",
            "token_used_at",
        ]


class PaymentDetailApi(APIView):
    @extend_schema(
        operation_id="payments_retrieve",
        summary="A payment's status; once paid, its token",
        description=(
            "Poll the `payment.status_url` of a 402 until `status` is `paid`, then retry the "
            "refused request with the header `Payment-Token: <token>`."
        ),
        tags=["payments"],
        responses={200: PaidPaymentSerializer, **errors(404)},
    )
    def get(self, request: AuthenticatedRequest, payment_id: uuid.UUID) -> Response:
        try:
            payment = selectors.payment_for_owner(owner=request.user, payment_id=payment_id)
        except Payment.DoesNotExist as exc:
            raise Http404 from exc
        return Response(PaymentOutputSerializer(payment).data)
