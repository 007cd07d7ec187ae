"""The account and payments API: what a run costs the key's account and what it holds; a
caller polls its Payment until it is paid, then reads the token.

The account endpoint is here, not in accounts, because it shows billing's balance and
price: billing may import accounts, accounts never imports billing.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from billing import selectors
from billing.models import Payment
from billing.selectors import billing_mode, credit_balance, simulation_price
from core.openapi import PriceSerializer, errors


class AccountApi(APIView):
    """Who the key belongs to and what a run costs them."""

    @extend_schema_serializer(component_name="Account")
    class OutputSerializer(serializers.Serializer[dict[str, Any]]):
        email = serializers.EmailField()
        credit_balance = serializers.IntegerField()
        price = PriceSerializer(help_text="What one run costs.")
        billing_mode = serializers.ChoiceField(choices=["off", "test", "live"])

    @extend_schema(
        operation_id="account_retrieve",
        summary="Your account",
        description="The key's e-mail, remaining run credits, the price of a run, billing mode.",
        tags=["account"],
        responses={200: OutputSerializer, **errors()},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        data = {
            "email": request.user.email,
            "credit_balance": credit_balance(user=request.user),
            "price": simulation_price(),
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
            "currency",
            "runs",
            "credit_pack",
            "checkout_url",
            "expires_at",
            "created_at",
            "paid_at",
            "simulation",
        ]

    def get_credit_pack(self, payment: Payment) -> dict[str, Any] | None:
        pack = payment.credit_pack
        return {"id": pack.pk, "name": pack.name, "runs": payment.runs} if pack else None

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
        required=False, help_text="Send as `Payment-Token` to pay for one run."
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
