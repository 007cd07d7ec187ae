from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import api_key_create, user_create


class Command(BaseCommand):
    help = "Create an API key for an account and print it (alone, on the last line)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the account (without a password) if it does not exist.",
        )
        parser.add_argument("--name", default="", help="A label for the key.")

    def handle(self, *args, email: str, create_user: bool, name: str, **options) -> None:
        email = email.strip().lower()
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            if not create_user:
                raise CommandError(f"No account {email}; pass --create-user to create it.")
            user = user_create(email=email, password=None)
            self.stderr.write(f"Created account {email} (no password; use password reset).")
        _api_key, plaintext = api_key_create(user=user, name=name)
        self.stderr.write("The key is shown once; store it now.")
        self.stdout.write(plaintext)
