from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import billing_mode, credit_balance, simulation_price
from core.openapi import PriceSerializer, errors


class AccountApi(APIView):
    """Who the key belongs to and what a run costs them."""

    @extend_schema_serializer(component_name="Account")
    class OutputSerializer(serializers.Serializer):
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
    def get(self, request: Request) -> Response:
        data = {
            "email": request.user.email,
            "credit_balance": credit_balance(user=request.user),
            "price": simulation_price(),
            "billing_mode": billing_mode(),
        }
        return Response(self.OutputSerializer(data).data)
