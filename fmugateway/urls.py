from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from fmugateway import health, views

handler404 = "fmugateway.problems.api_aware_404"
handler500 = "fmugateway.problems.api_aware_500"

urlpatterns = [
    path("", views.landing, name="landing"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("accounts.urls")),
    path("portal/", include("simulations.portal_urls")),
    path("api/v1/", include("fmugateway.api_urls")),
]
