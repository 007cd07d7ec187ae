from django.urls import path

from billing import api as billing_api_views
from billing.urls import api_urlpatterns as billing_api
from simulations.urls import api_urlpatterns as simulations_api

urlpatterns = [
    path("account", billing_api_views.AccountApi.as_view(), name="api-account"),
    *simulations_api,
    *billing_api,
]
