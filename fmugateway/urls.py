from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing import views as billing_views
from core import health

handler404 = "core.handlers.api_aware_404"
handler500 = "core.handlers.api_aware_500"

urlpatterns = [
    path("", billing_views.landing, name="landing"),
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
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("billing.urls")),
]
if settings.STRIPE_APP_INSTALLED:  # not in the embedded mode (SQLite, billing off)
    urlpatterns.append(path("stripe/", include("djstripe.urls", namespace="djstripe")))
