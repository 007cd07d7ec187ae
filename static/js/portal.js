// Small behaviours of the portal pages, kept out of the HTML so pages need no inline script.
(function () {
  "use strict";
  // <form data-confirm="question">: ask before submitting (e.g. deleting a model).
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
