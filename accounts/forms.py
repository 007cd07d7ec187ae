from django import forms
from django.contrib.auth.forms import BaseUserCreationForm
from django.utils import timezone

from accounts.models import User


class SignupForm(BaseUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this e-mail already exists.")
        return email


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, required=False, help_text="To tell your keys apart, e.g. “CI pipeline”."
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at (optional)",
        help_text="UTC, e.g. 2027-01-31 18:00. Leave empty for a key that does not expire.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at
