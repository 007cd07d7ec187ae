// The new-study form: shows the fields of the chosen design kind, and keeps a live price by
// posting the form as it is to the server's dry run (nothing is created or charged).
// The page works without this script: every field shows, and the price is told on submit.
(function () {
  "use strict";

  const form = document.getElementById("study-form");
  if (!form) return;
  const kind = form.elements.namedItem("kind");
  const price = document.getElementById("study-price");
  const QUOTE_DELAY_MS = 400;

  function showKindFields() {
    form.querySelectorAll("[data-kinds]").forEach((element) => {
      element.hidden = !element.dataset.kinds.split(" ").includes(kind.value);
    });
  }

  function money(amount, currency) {
    return currency === "usd" ? "$" + amount : amount + " " + currency.toUpperCase();
  }

  function firstError(errors) {
    for (const [field, messages] of Object.entries(errors || {})) {
      if (messages && messages.length) return (field ? field + ": " : "") + messages[0];
    }
    return "check the fields.";
  }

  let timer = null;
  let latest = 0;

  async function quote() {
    const ticket = ++latest;
    let response;
    try {
      response = await fetch(form.dataset.quoteUrl, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (error) {
      if (ticket === latest) price.textContent = "The price could not be computed just now.";
      return;
    }
    if (ticket !== latest) return; // a newer edit is being priced
    let body = {};
    try {
      body = await response.json();
    } catch (error) {
      body = {};
    }
    if (response.ok) {
      const cases = body.cases === 1 ? "1 case" : body.cases.toLocaleString("en") + " cases";
      const cost =
        form.dataset.billing === "on" ? money(body.price.amount, body.price.currency) : "free on this server";
      price.textContent = cases + " · " + cost;
      price.dataset.cases = String(body.cases);
    } else {
      price.textContent = "Not a valid study yet: " + firstError(body.errors);
      delete price.dataset.cases;
    }
  }

  function scheduleQuote() {
    window.clearTimeout(timer);
    timer = window.setTimeout(quote, QUOTE_DELAY_MS);
  }

  kind.addEventListener("change", showKindFields);
  form.addEventListener("input", scheduleQuote);
  form.addEventListener("change", scheduleQuote);
  showKindFields();
  if (form.querySelector(".param input[type=checkbox]:checked")) scheduleQuote();
})();
