import secrets

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.forms import ApiKeyCreateForm, SignupForm
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ApiKey
from accounts.selectors import api_key_for_user, api_keys_for_user
from accounts.services import api_key_create, api_key_revoke, user_create


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_create(
            email=form.cleaned_data["email"], password=form.cleaned_data["password1"]
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome! Create an API key to call the API.")
        return redirect("accounts:keys")
    return render(request, "registration/signup.html", {"form": form})


FORM_NONCES_SESSION_KEY = "api_key_form_nonces"
KEPT_FORM_NONCES = 5


def _issue_form_nonce(request: HttpRequest) -> str:
    nonce = secrets.token_urlsafe(16)
    nonces = request.session.get(FORM_NONCES_SESSION_KEY, [])[-(KEPT_FORM_NONCES - 1) :]
    request.session[FORM_NONCES_SESSION_KEY] = [*nonces, nonce]
    return nonce


def _consume_form_nonce(request: HttpRequest) -> bool:
    """True once per rendered form: a reload that re-sends the POST makes no second key."""
    nonces = request.session.get(FORM_NONCES_SESSION_KEY, [])
    nonce = request.POST.get("form_nonce")
    if nonce not in nonces:
        return False
    request.session[FORM_NONCES_SESSION_KEY] = [kept for kept in nonces if kept != nonce]
    return True


@login_required
def api_keys(request: AuthenticatedHttpRequest) -> HttpResponse:
    """List keys; a POST creates one and shows its plaintext in this response only.

    The plaintext never goes into the session (a database row), so there is no
    redirect-after-POST; a one-time form nonce stops a reload from making another key.
    """
    form = ApiKeyCreateForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        if _consume_form_nonce(request):
            _api_key, new_key = api_key_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_at=form.cleaned_data["expires_at"],
            )
        else:
            messages.info(
                request,
                "That form was already sent: its key is listed below (it was shown once). "
                "Use this fresh form to create another.",
            )
        form = ApiKeyCreateForm()
    response = render(
        request,
        "accounts/api_keys.html",
        {
            "form": form,
            "form_nonce": _issue_form_nonce(request),
            "api_keys": api_keys_for_user(user=request.user),
            "new_key": new_key,
        },
    )
    if new_key:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_key_revoke_view(request: AuthenticatedHttpRequest, key_id: int) -> HttpResponse:
    try:
        api_key = api_key_for_user(user=request.user, key_id=key_id)
    except ApiKey.DoesNotExist as exc:
        raise Http404 from exc
    api_key_revoke(api_key=api_key)
    messages.success(request, f"Key {api_key.prefix} revoked; it stops working immediately.")
    return redirect("accounts:keys")
