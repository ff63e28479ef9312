/* faceproof liveness session: the embeddable browser client (served as /v1/sessions/client.js).

   FaceproofSession.start({sessionId, token, container, baseUrl?, onResult?, iceServers?, texts?})

   Streams the front camera to the service over WebRTC, shows the video the service sends back
   (the user's own, mirrored, with the instructions drawn in), shows the data channel's
   instructions as text (#instruction) and progress, and ends on a result screen
   (#result, data-status SUCCEEDED | FAILED | EXPIRED; #reason: why it failed, in the session's
   language). No external resources. docs/sessions.md. */
(function (global) {
  "use strict";

  var TEXTS = {
    starting: "Starting the camera…",
    connecting: "Connecting…",
    lookAtCamera: "Look at the camera",
    step: "Step {n} of {count}",
    passed: "Done",
    cameraDenied: "Camera access was denied. Allow the camera for this page in your browser settings, then tap Try again.",
    noCamera: "No camera was found on this device.",
    cameraBusy: "The camera is used by another app. Close it, then tap Try again.",
    insecure: "The camera can only be used on a secure (https) page.",
    unsupported: "This browser cannot run the check. Please use a recent Chrome, Safari, Firefox or Edge.",
    badLink: "This link is not valid (it may have been replaced by a newer one). Ask for a new link.",
    inUse: "This check is open in another tab or device. Close it there, then tap Try again.",
    network: "Network error: the service could not be reached. Check your connection and tap Try again.",
    busy: "The service is busy right now. Please tap Try again.",
    dropped: "The connection was lost.",
    checking: "Checking the session…",
    retry: "Try again",
    result: {
      SUCCEEDED: ["Thank you", "The check is complete. You can close this page."],
      FAILED: ["Check not passed", "We could not confirm a live person. You can close this page."],
      EXPIRED: ["Session expired", "This session has expired. Ask for a new link."]
    },
    finished: "This session has already finished.",
    virtualCamera: "Use your device's own camera, not a virtual one."
  };

  var TERMINAL = { SUCCEEDED: true, FAILED: true, EXPIRED: true };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text) { node.textContent = text; }
    return node;
  }

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return String(values[key]); });
  }

  function merge(base, extra) {
    var out = {};
    Object.keys(base).forEach(function (k) { out[k] = base[k]; });
    Object.keys(extra || {}).forEach(function (k) { out[k] = extra[k]; });
    return out;
  }

  function start(options) {
    var texts = merge(TEXTS, options.texts);
    var container = typeof options.container === "string"
      ? document.querySelector(options.container) : options.container;
    if (!container) { throw new Error("FaceproofSession.start: container not found"); }
    var base = (options.baseUrl || "").replace(/\/+$/, "");
    var api = base + "/v1/sessions/" + encodeURIComponent(options.sessionId || "");
    var token = options.token || "";

    // ---- the view
    var root = el("div", { "class": "faceproof", "data-faceproof": "" });
    var stage = el("div", { "class": "faceproof-stage" });
    var video = el("video", { autoplay: "", playsinline: "", muted: "", "class": "faceproof-mirror" });
    video.muted = true;
    stage.appendChild(video);
    var instruction = el("p", { id: "instruction", "aria-live": "polite" }, texts.starting);
    var progress = el("p", { "class": "faceproof-progress", id: "progress" });
    var message = el("p", { "class": "faceproof-message", id: "message", role: "status" });
    var retry = el("button", { type: "button", id: "retry", hidden: "" }, texts.retry);
    var result = el("div", { id: "result", hidden: "", role: "status" });
    root.appendChild(stage);
    root.appendChild(instruction);
    root.appendChild(progress);
    root.appendChild(message);
    root.appendChild(retry);
    root.appendChild(result);
    container.innerHTML = "";
    container.appendChild(root);

    var state = { stream: null, pc: null, channel: null, done: false, attempt: 0, poll: null, started: false, hint: "" };

    function showMessage(text, isError) {
      message.textContent = text || "";
      message.className = "faceproof-message" + (isError ? " faceproof-error" : "");
    }

    function offerRetry(text) {
      showMessage(text, true);
      retry.hidden = false;
    }

    function stopPolling() {
      if (state.poll) { clearInterval(state.poll); state.poll = null; }
    }

    function closePeer() {
      var pc = state.pc;
      state.pc = null;
      state.channel = null;
      if (pc) { try { pc.close(); } catch (e) { /* already closed */ } }
    }

    function stopCamera() {
      if (state.stream) { state.stream.getTracks().forEach(function (t) { t.stop(); }); }
      state.stream = null;
    }

    function showResult(status, text, reasons, detail) {
      if (state.done) { return; }
      state.done = true;
      stopPolling();
      var copy = texts.result[status] || [status, ""];
      result.setAttribute("data-status", status);
      result.innerHTML = "";
      result.appendChild(el("h1", {}, copy[0]));
      result.appendChild(el("p", {}, text || copy[1]));
      if (detail) { result.appendChild(el("p", { id: "reason" }, detail)); }
      result.hidden = false;
      stage.hidden = true;
      instruction.hidden = true;
      progress.hidden = true;
      retry.hidden = true;
      showMessage("");
      setTimeout(function () { closePeer(); stopCamera(); }, 1500);
      if (typeof options.onResult === "function") {
        try { options.onResult({ status: status, reasons: reasons || [] }); } catch (e) { /* app's */ }
      }
    }

    function request(path, init) {
      init = init || {};
      init.headers = merge(init.headers || {}, { Authorization: "Bearer " + token });
      init.cache = "no-store";
      init.credentials = "omit";
      return fetch(api + path, init);
    }

    function readStatus() {
      return request("/status").then(function (response) {
        if (response.status === 401 || response.status === 404) { return { error: "badLink" }; }
        if (!response.ok) { return { error: "busy" }; }
        return response.json();
      }, function () { return { error: "network" }; });
    }

    function checkAfterDrop() {
      if (state.done) { return; }
      readStatus().then(function (body) {
        if (state.done) { return; }
        if (body.status && TERMINAL[body.status]) {
          showResult(body.status);
        } else if (body.error === "badLink") {
          stopPolling();
          offerRetry(texts.badLink);
        } else if (!state.pc) {
          offerRetry(body.error ? texts[body.error] : texts.dropped);
        }
      });
    }

    function dropped() {
      if (state.done) { return; }
      closePeer();
      showMessage(texts.checking);
      instruction.textContent = texts.dropped;
      checkAfterDrop();
      stopPolling();
      state.poll = setInterval(checkAfterDrop, 3000);  // the session may still finish or expire
    }

    function onData(event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (!msg || typeof msg !== "object") { return; }
      if (msg.type === "challenge") {
        instruction.textContent = msg.text || msg.challenge || "";
        if (typeof msg.index === "number" && msg.count) {
          progress.textContent = format(texts.step, { n: msg.index + 1, count: msg.count });
        }
        state.started = true;
        showMessage(state.hint, true);  // what still keeps the frames from counting, if anything
      } else if (msg.type === "guidance" && state.started) {  // during the challenges: beside them
        state.hint = msg.text || "";
        showMessage(state.hint, true);
      } else if (msg.type === "guidance") {  // get ready: what to fix before the first challenge
        instruction.textContent = msg.text || "";
        showMessage("");
      } else if (msg.type === "verdict") {
        if (msg.text) { showMessage(msg.text, !msg.passed); }
        if (typeof msg.index === "number" && msg.count) {
          progress.textContent = format(texts.step, { n: msg.index + 1, count: msg.count }) +
            (msg.passed ? " ✓" : "");
        }
      } else if (msg.type === "decided") {
        instruction.textContent = msg.text || "";
      } else if (msg.type === "finished" && TERMINAL[msg.status]) {
        showResult(msg.status, msg.text, msg.reasons, msg.detail);
      }
    }

    function waitForIce(pc, timeoutMs) {
      return new Promise(function (resolve) {
        if (pc.iceGatheringState === "complete") { resolve(); return; }
        var timer = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(timer);
          pc.removeEventListener("icegatheringstatechange", check);
          resolve();
        }
        function check() { if (pc.iceGatheringState === "complete") { done(); } }
        pc.addEventListener("icegatheringstatechange", check);
      });
    }

    function camera() {
      if (state.stream) { return Promise.resolve(state.stream); }
      if (!global.isSecureContext && location.hostname !== "localhost" && location.hostname !== "127.0.0.1") {
        return Promise.reject({ text: texts.insecure });
      }
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !global.RTCPeerConnection) {
        return Promise.reject({ text: texts.unsupported, final: true });
      }
      return navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } }
      }).then(function (stream) {
        state.stream = stream;
        video.srcObject = stream;  // a mirrored preview until the service's video arrives
        video.className = "faceproof-mirror";
        return stream;
      }, function (error) {
        var name = error && error.name;
        if (name === "NotAllowedError" || name === "SecurityError") { throw { text: texts.cameraDenied }; }
        if (name === "NotFoundError" || name === "OverconstrainedError") { throw { text: texts.noCamera }; }
        if (name === "NotReadableError" || name === "AbortError") { throw { text: texts.cameraBusy }; }
        throw { text: texts.unsupported };
      });
    }

    function hex(buffer) {
      return Array.prototype.map.call(new Uint8Array(buffer), function (b) {
        return (b < 16 ? "0" : "") + b.toString(16);
      }).join("");
    }

    function range(capability) {
      if (!capability || typeof capability.min !== "number" || typeof capability.max !== "number") {
        return undefined;
      }
      return { min: capability.min, max: capability.max };
    }

    // What the browser says the camera is (docs/liveness.md, "Injected and replayed streams"):
    // its label, settings and capabilities; the device id only as a SHA-256.
    function cameraReport(track) {
      var settings = track.getSettings ? track.getSettings() : {};
      var caps = track.getCapabilities ? track.getCapabilities() : null;
      var report = { label: String(track.label || "").slice(0, 256) };
      if (typeof settings.width === "number") { report.width = Math.round(settings.width); }
      if (typeof settings.height === "number") { report.height = Math.round(settings.height); }
      if (typeof settings.frameRate === "number") { report.frameRate = settings.frameRate; }
      if (caps) {
        report.capabilities = {
          width: range(caps.width), height: range(caps.height), frameRate: range(caps.frameRate)
        };
      }
      var subtle = global.crypto && global.crypto.subtle;
      if (!settings.deviceId || !subtle || !global.TextEncoder) { return Promise.resolve(report); }
      return subtle.digest("SHA-256", new TextEncoder().encode(settings.deviceId)).then(function (digest) {
        report.deviceIdHash = hex(digest);
        return report;
      }, function () { return report; });
    }

    function answerProblem(response) {
      return response.json().catch(function () { return {}; }).then(function (problem) {
        var code = problem.code || "";
        if (response.status === 401 || response.status === 404) { throw { text: texts.badLink, final: true }; }
        if (code === "SESSION_FINISHED" || code === "SESSION_EXPIRED" || code === "VIRTUAL_CAMERA") {
          return readStatus().then(function (body) {
            var status = body.status && TERMINAL[body.status] ? body.status : "EXPIRED";
            showResult(status, code === "SESSION_FINISHED" ? texts.finished : null,
              code === "VIRTUAL_CAMERA" ? [code] : [], code === "VIRTUAL_CAMERA" ? texts.virtualCamera : null);
            throw { handled: true };
          });
        }
        if (code === "SESSION_IN_USE") { throw { text: texts.inUse }; }
        if (response.status === 400 || response.status === 413) { throw { text: texts.unsupported }; }
        throw { text: texts.busy };
      });
    }

    function connect() {
      state.attempt += 1;
      var attempt = state.attempt;
      retry.hidden = true;
      stopPolling();
      showMessage("");
      if (!options.sessionId || !token) { offerRetry(texts.badLink); retry.hidden = true; return; }
      camera().then(function (stream) {
        instruction.textContent = texts.connecting;
        closePeer();
        var pc = new RTCPeerConnection({ iceServers: options.iceServers || [] });
        state.pc = pc;
        var channel = pc.createDataChannel("faceproof");  // before the offer: it is negotiated in it
        state.channel = channel;
        channel.onmessage = onData;
        var track = stream.getVideoTracks()[0];
        pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] });
        pc.ontrack = function (event) {
          video.srcObject = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
          video.className = "";  // the service's video is already mirrored
          var playing = video.play();
          if (playing && playing.catch) { playing.catch(function () { /* autoplay of muted video */ }); }
        };
        pc.onconnectionstatechange = function () {
          if (state.pc !== pc) { return; }
          var s = pc.connectionState;
          if (s === "connected") { showMessage(""); }
          if (s === "failed" || s === "closed" || s === "disconnected") {
            // "disconnected" may recover; give it a moment before treating it as lost.
            if (s === "disconnected") {
              setTimeout(function () {
                if (state.pc === pc && pc.connectionState !== "connected") { dropped(); }
              }, 4000);
            } else {
              dropped();
            }
          }
        };
        channel.onclose = function () {
          setTimeout(function () { if (state.pc === pc && !state.done) { dropped(); } }, 1500);
        };
        return pc.createOffer()
          .then(function (offer) { return pc.setLocalDescription(offer); })
          .then(function () { return waitForIce(pc, 8000); })
          .then(function () { return cameraReport(track); })
          .then(function (report) {
            return request("/offer", {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", camera: report })
            }).catch(function () { throw { text: texts.network }; });
          })
          .then(function (response) {
            if (!response.ok) { return answerProblem(response); }
            return response.json();
          })
          .then(function (answer) {
            if (attempt !== state.attempt) { return; }
            instruction.textContent = texts.lookAtCamera;
            return pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
          });
      }).catch(function (error) {
        if (attempt !== state.attempt || state.done || (error && error.handled)) { return; }
        closePeer();
        var text = error && error.text ? error.text : texts.network;
        instruction.textContent = "";
        offerRetry(text);
        if (error && error.final) { retry.hidden = true; }
      });
    }

    retry.addEventListener("click", function () { connect(); });
    connect();

    return {
      stop: function () { state.done = true; stopPolling(); closePeer(); stopCamera(); },
      retry: connect
    };
  }

  global.FaceproofSession = { start: start, version: "1" };
})(window);
