// nano-banana console: one hand-written script, no build step. Every page works without it;
// with it the playground sends its form in the background and shows the task live.
"use strict";

(function () {
  function $(selector, root) { return (root || document).querySelector(selector); }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // Copy buttons: data-copy names the element whose text is copied.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var label = button.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.textContent).then(done, function () { select(source); });
    } else {
      select(source);
      try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
    }
  });
  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  var form = $("#generate");
  if (!form) { return; }
  var status = $("#status");
  var results = $("#results");
  var submit = $("#submit");
  var files = $("#images");
  var drop = $("#drop");
  var picked = $("#picked");
  var sources = $("#sources");

  // Removing an image chosen for editing.
  sources.addEventListener("click", function (event) {
    var remove = event.target.closest(".remove");
    if (remove) { remove.closest("li").remove(); update(); $("#prompt").focus(); }
  });

  function addSource(key) {
    var item = el("li", { "class": "chip" });
    item.appendChild(el("input", { type: "hidden", name: "source", value: key }));
    item.appendChild(el("img", { src: "/console/thumbs/" + encodeURIComponent(key), alt: "", width: "48", height: "48" }));
    item.appendChild(el("span", {}, "Earlier image"));
    item.appendChild(el("button", { type: "button", "class": "remove", "aria-label": "Do not edit this image" }, "×"));
    sources.appendChild(item);
    update();
  }

  // "Edit this" on a result: edit it here, without leaving the page.
  results.addEventListener("click", function (event) {
    var link = event.target.closest("a.edit-this");
    if (!link) { return; }
    event.preventDefault();
    addSource(link.getAttribute("data-key"));
    var prompt = $("#prompt");
    prompt.focus();
    prompt.select();
  });

  function showPicked() {
    var names = Array.prototype.map.call(files.files, function (f) { return f.name; });
    picked.textContent = names.length ? names.length + " image(s) chosen: " + names.join(", ") : "";
    update();
  }
  files.addEventListener("change", showPicked);
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (event) { event.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      files.files = event.dataTransfer.files;
      showPicked();
    }
  });

  // The same request from code.
  function body() {
    var data = { prompt: form.prompt.value || "A banana-shaped lighthouse at dusk" };
    if (form.model.value) { data.model = form.model.value; }
    if (form.aspect_ratio.value) { data.aspect_ratio = form.aspect_ratio.value; }
    if (form.resolution.value && form.resolution.value !== "1K") { data.resolution = form.resolution.value; }
    var count = parseInt(form.count.value, 10);
    if (count > 1) { data.count = count; }
    var edits = files.files.length + sources.querySelectorAll("li").length;
    if (edits) {
      data.action = "edit";
      data.image_urls = [];
      for (var i = 0; i < edits; i++) { data.image_urls.push("data:image/png;base64,<your image " + (i + 1) + ", base64>"); }
    }
    return data;
  }
  function update() {
    var base = form.getAttribute("data-base");
    var json = JSON.stringify(body(), null, 2);
    $("#curl").textContent =
      "curl -X POST " + base + "/nano-banana/images \\\n" +
      "  -H \"Authorization: Bearer $NANO_BANANA_TOKEN\" \\\n" +
      "  -H \"Content-Type: application/json\" \\\n" +
      "  -d '" + json.replace(/'/g, "'\\''") + "'";
    $("#python").textContent =
      "import os\nimport requests\n\n" +
      "response = requests.post(\n" +
      "    \"" + base + "/nano-banana/images\",\n" +
      "    headers={\"Authorization\": f\"Bearer {os.environ['NANO_BANANA_TOKEN']}\"},\n" +
      "    json=" + json.replace(/\n/g, "\n    ") + ",\n" +
      "    timeout=300,\n)\n" +
      "response.raise_for_status()\n" +
      "for image in response.json()[\"data\"]:\n    print(image[\"image_url\"])";
  }
  form.addEventListener("input", update);
  update();

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "status notice error" : "status";
    status.setAttribute("role", isError ? "alert" : "status");
  }

  function show(task) {
    results.textContent = "";
    task.images.forEach(function (image, i) {
      var figure = el("figure");
      var link = el("a", { href: image.url });
      link.appendChild(el("img", { src: image.url, alt: "Result " + (i + 1) + ": " + form.prompt.value }));
      figure.appendChild(link);
      var caption = el("figcaption");
      caption.appendChild(el("a", { "class": "button", href: image.url, download: "" }, "Download"));
      if (image.key) {
        caption.appendChild(el("a", { "class": "button secondary edit-this", href: "/?source=" + encodeURIComponent(image.key), "data-key": image.key }, "Edit this"));
      }
      caption.appendChild(el("a", { "class": "button secondary", href: task.task_url }, "Task details"));
      figure.appendChild(caption);
      results.appendChild(figure);
    });
  }

  var labels = { pending: "Waiting in the queue…", processing: "Making your image…" };
  function poll(url, started) {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.json().then(function (data) { return [response, data]; }); })
      .then(function (pair) {
        var response = pair[0], task = pair[1];
        if (!response.ok) {
          if (response.status >= 500) { setTimeout(function () { poll(url, started); }, 2000); }
          say(task.error || "The task's state could not be read.", response.status < 500);
          if (response.status < 500) { submit.disabled = false; }
          return;
        }
        var seconds = ((Date.now() - started) / 1000).toFixed(1);
        if (!task.done) {
          say((labels[task.state] || "Working…") + " (" + seconds + " s)");
          setTimeout(function () { poll(url, started); }, 700);
          return;
        }
        submit.disabled = false;
        if (task.state === "succeeded") {
          say("Done in " + seconds + " s" + (task.charged != null
            ? ", " + task.charged + (task.charged === 1 ? " credit." : " credits.")
            : "."));
          show(task);
        } else {
          say("The task failed: " + (task.error || "no reason was given."), true);
        }
      })
      .catch(function () {
        say("Lost touch with the server; still trying…", true);
        setTimeout(function () { poll(url, started); }, 2000);
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit.disabled = true;
    say("Sending…");
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        var type = response.headers.get("content-type") || "";
        if (type.indexOf("application/json") < 0) {
          if (response.redirected && response.url.indexOf("/console/sign-in") >= 0) {
            throw new Error("Your session has ended: sign in again in another tab, then press Generate again.");
          }
          throw new Error(response.status === 403
            ? "This page is out of date: reload it (your prompt will need to be pasted again)."
            : "The server answered unexpectedly (" + response.status + "). Your form is unchanged: try again.");
        }
        return response.json().then(function (data) {
          if (!response.ok) { throw new Error(data.error || "The request was refused."); }
          return data;
        });
      })
      .then(function (task) {
        results.textContent = "";
        say("Accepted: waiting for the task…");
        poll(task.state_url, Date.now());
      })
      .catch(function (error) {
        submit.disabled = false;
        var message = error && error.message && error.message.indexOf("fetch") < 0
          ? error.message
          : "Could not reach the server. Your form is unchanged: try again.";
        say(message, true);
      });
  });
})();
