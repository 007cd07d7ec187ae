from django.urls import path

from accounts import api as accounts_api
from billing.urls import api_urlpatterns as billing_api
from simulations.urls import api_urlpatterns as simulations_api

urlpatterns = [
    path("account", accounts_api.AccountApi.as_view(), name="api-account"),
    *simulations_api,
    *billing_api,
]
