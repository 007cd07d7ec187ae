"""A small local Stripe for the test suite: no request of the suite ever reaches Stripe.

`FakeStripe` is an HTTP server (a thread of the test process) answering the API calls
that billing and dj-stripe make, with bodies shaped like Stripe's API reference:

    GET  /v1/account
    POST /v1/checkout/sessions              GET /v1/checkout/sessions[/{id}]
    POST /v1/checkout/sessions/{id}/expire
    GET  /v1/payment_intents/{id}           GET /v1/charges/{id}
    POST /v1/refunds                        POST /v1/webhook_endpoints

It holds the objects in memory, so a test can play the customer (`pay`, `expire`,
`refund`, ...), and it builds events (`event`) that `WebhookSender` signs exactly as
Stripe does (`Stripe-Signature: t=<ts>,v1=<HMAC-SHA256(secret, "<ts>.<body>")>`) and
POSTs to dj-stripe's real webhook URL. Requests it does not know are answered 404 and
kept in `unknown_requests`, so a test can show nothing unexpected was called.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import stripe

FAKE_SECRET_KEY = "sk_test_" + "f4kE" * 6  # matches Stripe's key format, as dj-stripe checks
ACCOUNT_ID = "acct_1FakeStripeAcct0"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def decode_stripe_params(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if isinstance(node, dict):
        node = {key: _lists(value) for key, value in node.items()}
        if node and all(key.isdigit() for key in node):
            return [node[key] for key in sorted(node, key=int)]
    return node


def stripe_signature(payload: str, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header value Stripe would send for this payload."""
    signed = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={signed.hexdigest()}"


class StripeHTTPError(Exception):
    def __init__(self, status: int, message: str, *, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": error_type, "message": message}}


@dataclass
class FakeStripe:
    secret_key: str = FAKE_SECRET_KEY
    sessions: dict[str, dict] = field(default_factory=dict)
    payment_intents: dict[str, dict] = field(default_factory=dict)
    charges: dict[str, dict] = field(default_factory=dict)
    refunds: dict[str, dict] = field(default_factory=dict)
    webhook_endpoints: dict[str, dict] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    unknown_requests: list[dict] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._idempotent: dict[tuple[str, str], dict] = {}
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            for store in (
                self.sessions,
                self.payment_intents,
                self.charges,
                self.refunds,
                self.webhook_endpoints,
                self._idempotent,
            ):
                store.clear()
            self.requests.clear()
            self.unknown_requests.clear()

    # --- HTTP ------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        params = decode_stripe_params(parse_qsl(split.query) + parse_qsl(body))
        record = {
            "method": method,
            "path": split.path,
            "params": params,
            "idempotency_key": handler.headers.get("Idempotency-Key"),
            "stripe_version": handler.headers.get("Stripe-Version"),
        }
        try:
            with self._lock:
                self.requests.append(record)
                if handler.headers.get("Authorization") != f"Bearer {self.secret_key}":
                    raise StripeHTTPError(401, "Invalid API Key provided.")
                status, payload = self._route(method, split.path, params, record)
        except StripeHTTPError as error:
            status, payload = error.status, error.body
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Request-Id", new_id("req"))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(self, method: str, path: str, params: dict, record: dict) -> tuple[int, dict]:
        key = record["idempotency_key"]
        if method == "POST" and key and (path, key) in self._idempotent:
            return 200, self._idempotent[(path, key)]
        routes: list[tuple[str, str, Callable[..., dict]]] = [
            ("GET", r"/v1/account", self._account),
            ("POST", r"/v1/checkout/sessions", self._session_create),
            ("GET", r"/v1/checkout/sessions", self._session_list),
            ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", self._session_retrieve),
            ("POST", r"/v1/checkout/sessions/(?P<id>[^/]+)/expire", self._session_expire_api),
            ("GET", r"/v1/payment_intents/(?P<id>[^/]+)", self._payment_intent_retrieve),
            ("GET", r"/v1/charges/(?P<id>[^/]+)", self._charge_retrieve),
            ("POST", r"/v1/refunds", self._refund_create),
            ("POST", r"/v1/webhook_endpoints", self._webhook_endpoint_create),
        ]
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                payload = action(params, **match.groupdict())
                if method == "POST" and key:
                    self._idempotent[(path, key)] = payload
                return 200, payload
        self.unknown_requests.append(record)
        raise StripeHTTPError(404, f"Unrecognized request URL ({method}: {path}).")

    # --- objects ---------------------------------------------------------------------------

    def _account(self, params: dict) -> dict:
        return {
            "id": ACCOUNT_ID,
            "object": "account",
            "business_profile": {"name": "FMU Gateway (fake)", "url": None},
            "business_type": "company",
            "capabilities": {"card_payments": "active"},
            "charges_enabled": True,
            "country": "US",
            "created": 1700000000,
            "default_currency": "usd",
            "details_submitted": True,
            "email": "billing@fmugateway.test",
            "metadata": {},
            "payouts_enabled": True,
            "settings": {
                "branding": {"icon": None, "logo": None, "primary_color": None},
                "dashboard": {"display_name": "FMU Gateway (fake)", "timezone": "Etc/UTC"},
            },
            "type": "standard",
        }

    def _session_create(self, params: dict) -> dict:
        for required in ("mode", "success_url", "line_items"):
            if required not in params:
                raise StripeHTTPError(400, f"Missing required param: {required}.")
        if params["mode"] != "payment":
            raise StripeHTTPError(400, "This fake only knows mode=payment.")
        now = int(time.time())
        expires_at = int(params.get("expires_at") or now + 24 * 3600)
        if not 30 * 60 - 5 <= expires_at - now <= 24 * 3600:
            raise StripeHTTPError(400, "expires_at must be 30 minutes to 24 hours from now.")
        session_id = new_id("cs_test")
        items = []
        for item in params["line_items"]:
            price = item["price_data"]
            quantity = int(item.get("quantity", 1))
            amount = int(price["unit_amount"]) * quantity
            items.append(
                {
                    "id": new_id("li"),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": amount,
                    "amount_tax": 0,
                    "amount_total": amount,
                    "currency": price["currency"],
                    "description": price["product_data"]["name"],
                    "price": {
                        "id": new_id("price"),
                        "object": "price",
                        "active": False,
                        "currency": price["currency"],
                        "product": new_id("prod"),
                        "type": "one_time",
                        "unit_amount": int(price["unit_amount"]),
                    },
                    "quantity": quantity,
                }
            )
        total = sum(item["amount_total"] for item in items)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "client_secret": None,
            "consent": None,
            "created": now,
            "currency": items[0]["currency"],
            "customer": None,
            "customer_creation": "if_required",
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "invoice": None,
            "livemode": False,
            "locale": None,
            "metadata": params.get("metadata", {}),
            "mode": "payment",
            "payment_intent": None,
            "payment_link": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "recovered_from": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": None,
            "subscription": None,
            "success_url": params["success_url"],
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}#fake",
            "_line_items": items,
            "_payment_intent_metadata": (params.get("payment_intent_data") or {}).get(
                "metadata", {}
            ),
        }
        self.sessions[session_id] = session
        return self._session_view(session, params)

    def _session_view(self, session: dict, params: dict) -> dict:
        view = {key: value for key, value in session.items() if not key.startswith("_")}
        expand = params.get("expand") or []
        if "line_items" in expand:
            items = [dict(item) for item in session["_line_items"]]
            if "line_items.data.discounts" in expand:
                for item in items:
                    item["discounts"] = []
            view["line_items"] = {
                "object": "list",
                "data": items,
                "has_more": False,
                "url": f"/v1/checkout/sessions/{session['id']}/line_items",
            }
        if "total_details.breakdown" in expand:
            view["total_details"] = {
                **view["total_details"],
                "breakdown": {"discounts": [], "taxes": []},
            }
        return view

    def _session(self, session_id: str) -> dict:
        if session_id not in self.sessions:
            raise StripeHTTPError(404, f"No such checkout.session: '{session_id}'")
        return self.sessions[session_id]

    def _session_retrieve(self, params: dict, id: str) -> dict:
        return self._session_view(self._session(id), params)

    def _session_list(self, params: dict) -> dict:
        sessions = sorted(self.sessions.values(), key=lambda s: s["created"], reverse=True)
        created = params.get("created") or {}
        if "gte" in created:
            sessions = [s for s in sessions if s["created"] >= int(created["gte"])]
        if params.get("starting_after"):
            ids = [s["id"] for s in sessions]
            sessions = sessions[ids.index(params["starting_after"]) + 1 :]
        limit = int(params.get("limit") or 10)
        return {
            "object": "list",
            "data": [self._session_view(s, params) for s in sessions[:limit]],
            "has_more": len(sessions) > limit,
            "url": "/v1/checkout/sessions",
        }

    def _session_expire_api(self, params: dict, id: str) -> dict:
        session = self._session(id)
        if session["status"] != "open":
            raise StripeHTTPError(400, "Only open Checkout Sessions can be expired.")
        session["status"] = "expired"
        return self._session_view(session, params)

    def _payment_intent_retrieve(self, params: dict, id: str) -> dict:
        if id not in self.payment_intents:
            raise StripeHTTPError(404, f"No such payment_intent: '{id}'")
        return self.payment_intents[id]

    def _charge_retrieve(self, params: dict, id: str) -> dict:
        if id not in self.charges:
            raise StripeHTTPError(404, f"No such charge: '{id}'")
        charge = dict(self.charges[id])
        if "balance_transaction" in (params.get("expand") or []):
            charge["balance_transaction"] = {
                "id": charge["balance_transaction"],
                "object": "balance_transaction",
                "amount": charge["amount"],
                "available_on": charge["created"] + 2 * 86400,
                "created": charge["created"],
                "currency": charge["currency"],
                "description": None,
                "exchange_rate": None,
                "fee": 59,
                "fee_details": [],
                "net": charge["amount"] - 59,
                "reporting_category": "charge",
                "source": charge["id"],
                "status": "pending",
                "type": "charge",
            }
        return charge

    def _refund_create(self, params: dict) -> dict:
        intent = self.payment_intents.get(params.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            raise StripeHTTPError(400, "This PaymentIntent has no successful charge to refund.")
        charge = self.charges[intent["latest_charge"]]
        if charge["refunded"]:
            raise StripeHTTPError(400, f"Charge {charge['id']} has already been refunded.")
        amount = int(params.get("amount") or charge["amount"] - charge["amount_refunded"])
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": params.get("metadata", {}),
            "payment_intent": intent["id"],
            "reason": params.get("reason"),
            "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        return refund

    def _webhook_endpoint_create(self, params: dict) -> dict:
        endpoint = {
            "id": new_id("we"),
            "object": "webhook_endpoint",
            "api_version": params.get("api_version"),
            "application": None,
            "created": int(time.time()),
            "description": None,
            "enabled_events": params.get("enabled_events", []),
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "secret": "whsec_" + secrets.token_hex(16),
            "status": "enabled",
            "url": params["url"],
        }
        self.webhook_endpoints[endpoint["id"]] = endpoint
        return endpoint

    # --- playing the customer (test side) --------------------------------------------------

    def session_view(self, session_id: str) -> dict:
        with self._lock:
            return self._session_view(self._session(session_id), {})

    def pay(self, session_id: str, *, amount_total: int | None = None) -> dict:
        """The customer pays by card: the session completes, paid."""
        with self._lock:
            session = self._session(session_id)
            if amount_total is not None:
                session["amount_total"] = amount_total
            self._complete(session, intent_status="succeeded")
            session["payment_status"] = "paid"
            return self.session_view(session_id)

    def start_async_payment(self, session_id: str) -> dict:
        """A delayed method (e.g. a bank debit): complete, but not paid yet."""
        with self._lock:
            self._complete(self._session(session_id), intent_status="processing")
            return self.session_view(session_id)

    def settle_async_payment(self, session_id: str, *, succeeded: bool) -> dict:
        with self._lock:
            session = self._session(session_id)
            intent = self.payment_intents[session["payment_intent"]]
            if succeeded:
                intent["status"] = "succeeded"
                intent["amount_received"] = intent["amount"]
                intent["latest_charge"] = self._charge_for(intent)
                session["payment_status"] = "paid"
            else:
                intent["status"] = "requires_payment_method"
            return self.session_view(session_id)

    def expire(self, session_id: str) -> dict:
        with self._lock:
            session = self._session(session_id)
            session["status"] = "expired"
            return self.session_view(session_id)

    def refund(self, session_id: str, *, amount: int | None = None) -> dict:
        """Refund the session's payment (as from the Stripe dashboard); returns the charge."""
        with self._lock:
            intent_id = self._session(session_id)["payment_intent"]
            params = {"payment_intent": intent_id}
            if amount is not None:
                params["amount"] = amount
            refund = self._refund_create(params)
            return dict(self.charges[refund["charge"]])

    def _complete(self, session: dict, *, intent_status: str) -> None:
        if session["status"] != "open":
            raise ValueError(f"session {session['id']} is {session['status']}, not open")
        intent = {
            "id": new_id("pi"),
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_capturable": 0,
            "amount_received": session["amount_total"] if intent_status == "succeeded" else 0,
            "capture_method": "automatic_async",
            "client_secret": None,
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": session["currency"],
            "customer": None,
            "description": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": session["_payment_intent_metadata"],
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_types": ["card"],
            "status": intent_status,
        }
        self.payment_intents[intent["id"]] = intent
        if intent_status == "succeeded":
            intent["latest_charge"] = self._charge_for(intent)
        session["status"] = "complete"
        session["payment_intent"] = intent["id"]
        session["customer_details"] = {"email": session["customer_email"], "name": None}

    def _charge_for(self, intent: dict) -> str:
        charge = {
            "id": new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "balance_transaction": new_id("txn"),
            "billing_details": {"email": None, "name": None},
            "captured": True,
            "created": int(time.time()),
            "currency": intent["currency"],
            "customer": None,
            "description": None,
            "disputed": False,
            "invoice": None,
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "outcome": {"network_status": "approved_by_network", "type": "authorized"},
            "paid": True,
            "payment_intent": intent["id"],
            "payment_method": None,
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
            "refunded": False,
            "status": "succeeded",
        }
        self.charges[charge["id"]] = charge
        return charge["id"]

    # --- events ----------------------------------------------------------------------------

    def event(self, event_type: str, obj: dict, *, created: int | None = None) -> dict:
        """A Stripe Event about `obj` (a snapshot, as Stripe sends it)."""
        return {
            "id": new_id("evt"),
            "object": "event",
            "api_version": stripe.api_version,
            "created": created or int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    def session_event(self, event_type: str, session_id: str) -> dict:
        return self.event(event_type, self.session_view(session_id))

    def charge_event(self, event_type: str, charge_id: str) -> dict:
        with self._lock:
            return self.event(event_type, dict(self.charges[charge_id]))

    def requests_to(self, method: str, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["method"] == method and r["path"] == path]


def pay_on_checkout(fake: FakeStripe, webhook: WebhookSender, session_id: str | None, *, to) -> int:
    """The customer pays on the Checkout page, then Stripe tells the gateway (`to`: a Django
    test client or a live server's base URL) with a signed checkout.session.completed.
    Returns the webhook's HTTP status code."""
    assert session_id, "the payment has no Checkout Session"
    fake.pay(session_id)
    return webhook.deliver(fake.session_event("checkout.session.completed", session_id), to=to)


@dataclass
class WebhookSender:
    """Signs events with the endpoint's secret and POSTs them to dj-stripe's webhook URL."""

    path: str
    secret: str

    def deliver(self, event: dict, *, to, timestamp: int | None = None, secret: str | None = None):
        """POST `event` to `to`: a Django test client or a live server's base URL.

        Returns the HTTP status code.
        """
        payload = json.dumps(event)
        signature = stripe_signature(
            payload, secret or self.secret, timestamp if timestamp is not None else int(time.time())
        )
        return self.post(payload, signature=signature, to=to)

    def post(self, payload: str, *, signature: str | None, to, headers: dict | None = None):
        extra = {"Stripe-Signature": signature} if signature is not None else {}
        extra.update(headers or {})
        if isinstance(to, str):
            import requests

            response = requests.post(
                to.rstrip("/") + self.path,
                data=payload.encode(),
                headers={"Content-Type": "application/json", **extra},
                timeout=30,
            )
            return response.status_code
        response = to.post(self.path, data=payload, content_type="application/json", headers=extra)
        return response.status_code
