"""The HTTP client: one method per API operation, plus `start_simulation`, which pays
for a run when the server answers 402 (if asked to), and `simulate`, which also waits
for the run and returns its table."""

from __future__ import annotations

import os
import time
import uuid
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, overload

import requests

from fmugateway_client import __version__
from fmugateway_client.bodies import simulation_request, study_request
from fmugateway_client.downloads import body_write
from fmugateway_client.errors import (
    PaymentFailed,
    PaymentRequired,
    PaymentTimeout,
    ServerError,
    SimulationFailed,
    SimulationTimeout,
    TransportError,
    api_error_from_response,
    retry_after_seconds,
)
from fmugateway_client.notices import (
    attached_to_terminal,
    payment_wait_limit,
    print_checkout_notice,
    print_study_checkout_notice,
)
from fmugateway_client.resources import Account, Model, Payment, Simulation, Variable
from fmugateway_client.result import Result
from fmugateway_client.studies import Study, StudyQuote

ModelRef = str | Model
RunRef = str | Simulation
ProgressCallback = Callable[[Simulation], None]
CheckoutNotice = Callable[[PaymentRequired], None]
PaymentMode = Literal["raise", "wait"]
SummaryRequest = str | Sequence[str] | Mapping[str, Sequence[str]]
T = TypeVar("T")

# The server holds ?wait=N for at most 30 s; asking for less keeps clear of proxies'
# idle timeouts. With a progress callback, shorter holds let progress show while it runs.
LONG_POLL_SECONDS = 25.0
PROGRESS_POLL_SECONDS = 2.0
PAYMENT_POLL_SECONDS = 2.0
PAGE_SIZE = 100
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_SLEEP_SECONDS = 30.0


class Client:
    """FMU Gateway API client.

    `base_url` is the server's root (e.g. "https://fmugateway.example"); `api_key` is a
    key made in the portal ("fmu_<prefix>_<secret>"). `timeout` bounds each HTTP request
    (long polls get it on top of their hold time). GETs, and POSTs made safe to repeat by
    an Idempotency-Key, are retried `retries` times on connection errors, 429 and 502-504.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        session: requests.Session | None = None,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        self.base_url = base
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key.strip()}"
        self.session.headers["User-Agent"] = f"fmugateway-client/{__version__}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- account and models -----------------------------------------------------------

    def account(self) -> Account:
        """Who the key belongs to, its credit balance, the price of a run, the billing mode."""
        return Account.from_json(self._json("GET", "account"))

    def upload_model(self, path: str | os.PathLike[str]) -> Model:
        """Upload an .fmu; the server checks it and answers with its summary."""
        fmu_path = Path(path)
        with fmu_path.open("rb") as handle:
            body = self._json(
                "POST",
                "models",
                files={"file": (fmu_path.name, handle, "application/octet-stream")},
                retry=False,  # the file stream cannot be replayed
                timeout=max(self.timeout, 300.0),
            )
        return Model.from_json(body)

    def models(self) -> list[Model]:
        """All of the account's models, newest first (every page)."""
        return [Model.from_json(item) for item in self._all_pages("models", {})]

    def model(self, model: ModelRef) -> Model:
        return Model.from_json(self._json("GET", f"models/{_id(model)}"))

    def delete_model(self, model: ModelRef) -> None:
        self._request("DELETE", f"models/{_id(model)}")

    def variables(self, model: ModelRef, *, causality: str | None = None) -> list[Variable]:
        """The model's variables; `causality` ("input", "output", "parameter", ...) filters."""
        params = {"causality": causality} if causality else {}
        body = self._json("GET", f"models/{_id(model)}/variables", params=params)
        return [Variable.from_json(item) for item in body]

    # --- simulations ------------------------------------------------------------------

    def start_simulation(
        self,
        model: ModelRef,
        *,
        start_time: float | None = None,
        stop_time: float | None = None,
        output_interval: float | None = None,
        step_size: float | None = None,
        relative_tolerance: float | None = None,
        fmi_type: str | None = None,
        solver: str | None = None,
        start_values: Mapping[str, float | int | bool | str] | None = None,
        input: Any = None,
        output: Sequence[str] | str | None = None,
        timeout: float | None = None,
        on_payment_required: PaymentMode = "raise",
        open_browser: bool = False,
        checkout_notice: CheckoutNotice | None = print_checkout_notice,
        payment_timeout: float | None = None,
        payment_poll_interval: float = PAYMENT_POLL_SECONDS,
        payment_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> Simulation:
        """Ask for one run and return it queued, without waiting for it.

        The parameters are fmpy's `simulate_fmu` ones; None means the model's default.
        `input` is {"time": [...], "<input>": [...]} (or a numpy structured array).

        On 402 (no credit): with on_payment_required="raise" (the default, for scripts)
        PaymentRequired is raised with the checkout URL. With "wait" the checkout URL is
        shown (`checkout_notice`; opened in a browser too if `open_browser` and a terminal
        is attached), the payment is polled until paid, and the request is sent again
        with its Payment-Token. Every attempt carries the same Idempotency-Key (made
        here unless given), so retries of one call never start or charge a second run.
        """
        body = simulation_request(
            _id(model),
            start_time=start_time,
            stop_time=stop_time,
            output_interval=output_interval,
            step_size=step_size,
            relative_tolerance=relative_tolerance,
            fmi_type=fmi_type,
            solver=solver,
            start_values=start_values,
            input=input,
            output=output,
            timeout=timeout,
        )
        key = idempotency_key or str(uuid.uuid4())
        return self._paying(
            lambda token: Simulation.from_json(self._post("simulations", body, key, token)),
            payment_token=payment_token,
            on_payment_required=on_payment_required,
            open_browser=open_browser,
            checkout_notice=checkout_notice,
            payment_timeout=payment_timeout,
            payment_poll_interval=payment_poll_interval,
        )

    def simulation(self, run: RunRef, *, wait: float = 0.0) -> Simulation:
        """The run's state; with `wait`, the server holds the answer up to that many
        seconds (at most 30) and answers as soon as the run has finished."""
        params = {"wait": f"{wait:g}"} if wait > 0 else {}
        body = self._json(
            "GET", f"simulations/{_id(run)}", params=params, timeout=self.timeout + wait
        )
        return Simulation.from_json(body)

    def simulations(self, *, status: str | None = None) -> list[Simulation]:
        """All of the account's runs, newest first; `status` filters (e.g. "running")."""
        params = {"status": status} if status else {}
        return [Simulation.from_json(item) for item in self._all_pages("simulations", params)]

    def wait(
        self,
        run: RunRef,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> Simulation:
        """Long-poll until the run has finished, calling `progress` with each state seen.

        Returns the finished run whatever its status; raises SimulationTimeout after
        `timeout` seconds (None: wait as long as it takes).
        """
        started = time.monotonic()
        hold = PROGRESS_POLL_SECONDS if progress else LONG_POLL_SECONDS
        simulation = run if isinstance(run, Simulation) else self.simulation(run)
        while True:
            if progress:
                progress(simulation)
            if simulation.finished:
                return simulation
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise SimulationTimeout(simulation, waited)
            remaining = hold if timeout is None else min(hold, max(timeout - waited, 0.1))
            simulation = self.simulation(simulation.id, wait=remaining)

    def simulate(
        self,
        model: ModelRef,
        *,
        start_time: float | None = None,
        stop_time: float | None = None,
        output_interval: float | None = None,
        step_size: float | None = None,
        relative_tolerance: float | None = None,
        fmi_type: str | None = None,
        solver: str | None = None,
        start_values: Mapping[str, float | int | bool | str] | None = None,
        input: Any = None,
        output: Sequence[str] | str | None = None,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        variables: Sequence[str] | None = None,
        on_payment_required: PaymentMode = "raise",
        open_browser: bool = False,
        checkout_notice: CheckoutNotice | None = print_checkout_notice,
        payment_timeout: float | None = None,
        payment_poll_interval: float = PAYMENT_POLL_SECONDS,
        payment_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        """Run the model, wait for it and return its result table.

        Takes start_simulation's parameters (the run's, and what to do on 402), plus:
        `progress`, called with the run's state while it is waited for; `wait_timeout`,
        after which SimulationTimeout is raised (the run goes on); `variables`, the
        result columns to fetch (default: all). Raises SimulationFailed if the run
        finishes without a result. `start_simulation` is the same without the waiting.
        """
        simulation = self.start_simulation(
            model,
            start_time=start_time,
            stop_time=stop_time,
            output_interval=output_interval,
            step_size=step_size,
            relative_tolerance=relative_tolerance,
            fmi_type=fmi_type,
            solver=solver,
            start_values=start_values,
            input=input,
            output=output,
            timeout=timeout,
            on_payment_required=on_payment_required,
            open_browser=open_browser,
            checkout_notice=checkout_notice,
            payment_timeout=payment_timeout,
            payment_poll_interval=payment_poll_interval,
            payment_token=payment_token,
            idempotency_key=idempotency_key,
        )
        simulation = self.wait(simulation, timeout=wait_timeout, progress=progress)
        if not simulation.succeeded:
            raise SimulationFailed(simulation)
        return self.result(simulation, variables=variables)

    def cancel(self, run: RunRef) -> Simulation:
        """Cancel a queued run (refunded) or kill a running one."""
        return Simulation.from_json(self._json("POST", f"simulations/{_id(run)}/cancel"))

    # --- results ----------------------------------------------------------------------

    def result(self, run: RunRef, *, variables: Sequence[str] | None = None) -> Result:
        """The finished run's result (JSON) as a Result table; `variables` picks columns."""
        params = {"format": "json"}
        if variables:
            params["variables"] = ",".join(variables)
        body = self._json("GET", f"simulations/{_id(run)}/result", params=params)
        return Result.from_json(body, run if isinstance(run, Simulation) else None)

    def result_csv(
        self,
        run: RunRef,
        path: str | os.PathLike[str] | IO[bytes],
        *,
        variables: Sequence[str] | None = None,
    ) -> Path | None:
        """Stream the result CSV (header `time,<var>,...`) to a file path or binary file.

        A path is written through a temporary file beside it, so a broken download never
        leaves a half file under the final name. Returns the path (None for a file object).
        """
        params = {"format": "csv"}
        if variables:
            params["variables"] = ",".join(variables)
        return self._download(f"simulations/{_id(run)}/result", params, path)

    # --- studies ----------------------------------------------------------------------

    # A dry run answers with a quote, not a study (overloads for type checkers).
    @overload
    def create_study(
        self,
        model: ModelRef | os.PathLike[str],
        *,
        design: Mapping[str, Any],
        base: Mapping[str, Any] | None = None,
        summary: SummaryRequest | None = None,
        dry_run: Literal[False] = False,
        idempotency_key: str | None = None,
        payment_token: str | None = None,
        on_payment_required: PaymentMode = "raise",
        open_browser: bool = False,
        checkout_notice: CheckoutNotice | None = print_study_checkout_notice,
        payment_timeout: float | None = None,
        payment_poll_interval: float = PAYMENT_POLL_SECONDS,
    ) -> Study: ...

    @overload
    def create_study(
        self,
        model: ModelRef | os.PathLike[str],
        *,
        design: Mapping[str, Any],
        base: Mapping[str, Any] | None = None,
        summary: SummaryRequest | None = None,
        dry_run: Literal[True],
        idempotency_key: str | None = None,
        payment_token: str | None = None,
        on_payment_required: PaymentMode = "raise",
        open_browser: bool = False,
        checkout_notice: CheckoutNotice | None = print_study_checkout_notice,
        payment_timeout: float | None = None,
        payment_poll_interval: float = PAYMENT_POLL_SECONDS,
    ) -> StudyQuote: ...

    def create_study(
        self,
        model: ModelRef | os.PathLike[str],
        *,
        design: Mapping[str, Any],
        base: Mapping[str, Any] | None = None,
        summary: SummaryRequest | None = None,
        dry_run: bool = False,
        idempotency_key: str | None = None,
        payment_token: str | None = None,
        on_payment_required: PaymentMode = "raise",
        open_browser: bool = False,
        checkout_notice: CheckoutNotice | None = print_study_checkout_notice,
        payment_timeout: float | None = None,
        payment_poll_interval: float = PAYMENT_POLL_SECONDS,
    ) -> Study | StudyQuote:
        """Start a study: every case is a run of `model` with `base` (a run's fields, e.g.
        {"stop_time": 3, "output": ["h"]}) and the start values `design` gives it.

        `model` is a model id, a Model, or the path of an .fmu to upload first. `summary`
        names the statistics kept per case (see the README). With dry_run=True nothing is
        created or charged: the answer is a StudyQuote (case count, price, normalised
        design). On 402 the whole study is paid at once, as start_simulation does for a
        run (on_payment_required="wait"); every attempt carries one Idempotency-Key.
        """
        model_id = self._model_id(model)
        body = study_request(model_id, design=design, base=base, summary=summary)
        if dry_run:
            quote = self._json("POST", "studies", params={"dry_run": "true"}, json=body, retry=True)
            return StudyQuote.from_json(quote)
        key = idempotency_key or str(uuid.uuid4())
        return self._paying(
            lambda token: Study(self, self._post("studies", body, key, token)),
            payment_token=payment_token,
            on_payment_required=on_payment_required,
            open_browser=open_browser,
            checkout_notice=checkout_notice,
            payment_timeout=payment_timeout,
            payment_poll_interval=payment_poll_interval,
        )

    def study(self, study: str | Study) -> Study:
        """A study by id, as it is now."""
        study_id = study.id if isinstance(study, Study) else str(study)
        return Study(self, self._json("GET", f"studies/{study_id}"))

    def studies(self, *, status: str | None = None) -> list[Study]:
        """All of the account's studies, newest first; `status` filters (e.g. "running")."""
        params = {"status": status} if status else {}
        return [Study(self, item) for item in self._all_pages("studies", params)]

    def _model_id(self, model: ModelRef | os.PathLike[str]) -> str:
        """A model's id; an .fmu path is uploaded first."""
        if isinstance(model, os.PathLike) or (
            isinstance(model, str) and model.lower().endswith(".fmu")
        ):
            return self.upload_model(model).id
        return _id(model)

    # --- payments ---------------------------------------------------------------------

    def payment(self, payment_id: str) -> Payment:
        """A payment's state; once paid for a run, with its single-use token."""
        return Payment.from_json(self._json("GET", f"payments/{payment_id}"))

    def wait_for_payment(
        self,
        payment_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = PAYMENT_POLL_SECONDS,
        expires_at: datetime | None = None,
    ) -> Payment:
        """Poll until the payment is paid with an unused token, and return it.

        Raises PaymentFailed when it expires, fails or is refunded, and PaymentTimeout
        after `timeout` seconds (default: until its Checkout link has expired, plus a
        minute for the server to hear of it).
        """
        started = time.monotonic()
        limit: float | None = timeout
        while True:
            payment = self.payment(payment_id)
            if payment.status == "paid":
                if payment.token and payment.token_status in (None, "unused"):
                    return payment
                raise PaymentFailed(payment, f"paid, but its token is {payment.token_status}")
            if payment.status in ("expired", "failed", "refunded"):
                raise PaymentFailed(payment, f"the payment is {payment.status}")
            if limit is None:  # fixed on the first look, so it does not move with the clock
                limit = payment_wait_limit(expires_at or payment.expires_at)
            waited = time.monotonic() - started
            if waited >= limit:
                raise PaymentTimeout(payment, waited)
            time.sleep(poll_interval)

    # --- HTTP -------------------------------------------------------------------------

    def _post(
        self, path: str, body: dict[str, Any], idempotency_key: str, payment_token: str | None
    ) -> Any:
        """A paid POST, safe to repeat: the same Idempotency-Key on every attempt."""
        headers = {"Idempotency-Key": idempotency_key}
        if payment_token:
            headers["Payment-Token"] = payment_token
        return self._json("POST", path, json=body, headers=headers, retry=True)

    def _paying(
        self,
        post: Callable[[str | None], T],
        *,
        payment_token: str | None,
        on_payment_required: PaymentMode,
        open_browser: bool,
        checkout_notice: CheckoutNotice | None,
        payment_timeout: float | None,
        payment_poll_interval: float,
    ) -> T:
        """post(payment_token); on 402 in "wait" mode: show where to pay, wait for the
        payment, and post again with its token (the caller's post keeps one key)."""
        if on_payment_required not in ("raise", "wait"):
            raise ValueError('on_payment_required is "raise" or "wait"')
        try:
            return post(payment_token)
        except PaymentRequired as required:
            if on_payment_required != "wait" or not required.payment_id:
                raise
            if checkout_notice is not None:
                checkout_notice(required)
            if open_browser and required.checkout_url and attached_to_terminal():
                webbrowser.open(required.checkout_url)
            paid = self.wait_for_payment(
                required.payment_id,
                timeout=payment_timeout,
                poll_interval=payment_poll_interval,
                expires_at=required.expires_at,
            )
            return post(paid.token)

    def _download(
        self, path: str, params: dict[str, str], target: str | os.PathLike[str] | IO[bytes]
    ) -> Path | None:
        """Stream a GET's body to a file path or binary file. A path is written through a
        temporary file beside it, so a broken download never leaves a half file under the
        final name. Returns the path (None for a file object)."""
        response = self._request("GET", path, params=params, stream=True)
        with response:
            return body_write(response, target)

    def _url(self, path: str) -> str:
        if path.startswith("/"):  # a path the API gave us, e.g. result_url
            return self.base_url + path
        return f"{self.base_url}/api/v1/{path}"

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as error:
            raise ServerError(
                response.status_code,
                title="Unreadable response",
                detail=f"{method} {path} did not answer with JSON: {response.text[:200]!r}",
            ) from error

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: bool | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One API call, retried (when safe) on connection errors, 429 and 502-504;
        an error answer becomes its typed ApiError."""
        retryable = method in ("GET", "HEAD") if retry is None else retry
        attempts = 1 + (self.retries if retryable else 0)
        url = self._url(path)
        read_timeout = timeout or self.timeout
        for attempt in range(attempts):
            last_attempt = attempt == attempts - 1
            try:
                response = self.session.request(
                    method, url, timeout=(self.timeout, read_timeout), **kwargs
                )
            except requests.RequestException as error:
                if last_attempt or not isinstance(
                    error, requests.ConnectionError | requests.Timeout
                ):
                    raise TransportError(f"{method} {url} failed: {error}") from error
                time.sleep(_backoff(attempt))
                continue
            if response.status_code < 400:
                return response
            if response.status_code in RETRY_STATUSES and not last_attempt:
                delay = retry_after_seconds(response)
                response.close()
                time.sleep(
                    min(delay if delay is not None else _backoff(attempt), MAX_RETRY_SLEEP_SECONDS)
                )
                continue
            problem = api_error_from_response(response)
            response.close()
            raise problem
        raise AssertionError("unreachable")  # pragma: no cover

    def _all_pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._json(
                "GET", path, params={**params, "limit": PAGE_SIZE, "offset": len(items)}
            )
            items.extend(page["results"])
            if not page.get("next") or not page["results"]:
                return items


def _id(reference: ModelRef | RunRef) -> str:
    return reference.id if isinstance(reference, Model | Simulation) else str(reference)


def _backoff(attempt: int) -> float:
    return min(0.5 * (1 << attempt), MAX_RETRY_SLEEP_SECONDS)
