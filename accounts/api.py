from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import billing_mode, credit_balance, simulation_price


class AccountApi(APIView):
    """Who the key belongs to and what a run costs them."""

    class OutputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        credit_balance = serializers.IntegerField()
        price = serializers.DictField(child=serializers.CharField())
        billing_mode = serializers.ChoiceField(choices=["off", "test", "live"])

    def get(self, request: Request) -> Response:
        data = {
            "email": request.user.email,
            "credit_balance": credit_balance(user=request.user),
            "price": simulation_price(),
            "billing_mode": billing_mode(),
        }
        return Response(self.OutputSerializer(data).data)
