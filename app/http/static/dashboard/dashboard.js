/* kinde-credits dashboard: small, dependency-free progressive enhancement.
   The page works without it; with it, the link's token leaves the address bar and a form
   (a purchase above all) is sent once even when its button is clicked twice. The server is
   idempotent on its own: this only spares a second round trip. */
(function () {
  "use strict";

  // The session cookie carries on after the link is opened: keep the token out of the
  // address bar, the history and bookmarks.
  if (window.location.search.indexOf("token=") !== -1 && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.pathname + window.location.hash);
  }

  var forms = document.querySelectorAll("form[data-once]");
  Array.prototype.forEach.call(forms, function (form) {
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-sent") === "1") {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-sent", "1");
      var button = form.querySelector("button[type=submit]");
      if (button) {
        button.setAttribute("aria-disabled", "true");
        button.classList.add("busy");
      }
    });
  });

  // Coming back with the Back button shows a cached page: let its forms be sent again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) {
      return;
    }
    Array.prototype.forEach.call(forms, function (form) {
      form.removeAttribute("data-sent");
      var button = form.querySelector("button[type=submit]");
      if (button) {
        button.removeAttribute("aria-disabled");
        button.classList.remove("busy");
      }
    });
  });
})();
