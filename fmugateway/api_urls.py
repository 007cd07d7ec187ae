from django.urls import path

from accounts import api as accounts_api

urlpatterns = [
    path("account", accounts_api.AccountApi.as_view(), name="api-account"),
]
