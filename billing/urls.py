from django.urls import path

from billing import api, views

app_name = "billing"

urlpatterns = [
    path("pricing/", views.pricing, name="pricing"),
    path("billing/", views.billing_history, name="history"),
    path("billing/payments/<uuid:payment_id>/", views.payment_detail, name="payment"),
    path("billing/packs/<int:pack_id>/buy/", views.credit_pack_buy, name="pack-buy"),
]

api_urlpatterns = [
    path("payments/<uuid:payment_id>", api.PaymentDetailApi.as_view(), name="api-payment"),
]
