/* The hosted page: session id from the path, client token from the fragment (kept out of
   server logs), then FaceproofSession.start. The token is moved from the address bar into
   sessionStorage, so a reload works and the address shown never holds it. */
(function () {
  "use strict";
  var container = document.querySelector("[data-faceproof-page]");
  if (!container || !window.FaceproofSession) { return; }
  var match = /\/sessions\/([^/]+)\/client\/?$/.exec(window.location.pathname);
  var sessionId = match ? decodeURIComponent(match[1]) : "";
  var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  var storageKey = "faceproof-token:" + sessionId;
  var token = params.get("token") || "";
  try {
    if (token) {
      window.sessionStorage.setItem(storageKey, token);
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    } else {
      token = window.sessionStorage.getItem(storageKey) || "";
    }
  } catch (e) { /* storage disabled: keep the token in memory only */ }
  // The page lives at {base}/v1/sessions/{id}/client: the API is on the same origin and prefix.
  var baseUrl = window.location.pathname.replace(/\/v1\/sessions\/[^/]+\/client\/?$/, "");
  window.FaceproofSession.start({
    sessionId: sessionId,
    token: token,
    container: container,
    baseUrl: baseUrl
  });
})();
