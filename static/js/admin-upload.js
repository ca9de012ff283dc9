// The admin's "Add images" page at collection scale (issue 20): drop files, whole folders or zip
// archives, and each file goes to POST /api/uploads/ in its own request, a few at a time, so one
// dropped connection loses only the files in flight and the page can show each one arrive.
// Before sending, every image is hashed (SHA-256, Web Crypto) and the server is asked in bulk
// which hashes it already holds: those are reported "already in the gallery" without their bytes
// being sent. Zips are stored by the server and expanded by a worker; the page polls their status.
//
// Without this script the classic form (one post for everything) stays in the page and works.
// Everything the script needs comes from data- attributes of section.bulk-upload (the site's
// Content-Security-Policy allows no inline script): URLs, the CSRF token and the settings
// UPLOAD_CONCURRENCY, UPLOAD_CHECK_MAX and UPLOAD_RETRIES.
(function () {
  "use strict";

  var section = document.querySelector("section.bulk-upload");
  if (!section || !window.FormData || !window.Promise || !window.XMLHttpRequest) return;

  var data = section.dataset;
  var config = {
    uploadUrl: data.uploadUrl,
    checkUrl: data.checkUrl,
    archiveUrl: data.archiveUrl,  // with 0 where the archive's id goes
    changeUrl: data.changeUrl,  // the admin page of image 0
    csrfToken: data.csrfToken,
    concurrency: positive(data.concurrency, 4),
    checkMax: positive(data.checkMax, 1000),
    retries: Math.max(0, parseInt(data.retries, 10) || 0)
  };
  // Retries wait about 1 s, 2 s, 4 s ... (a quarter either way, so that files that failed
  // together do not all come back at the same instant).
  var BACKOFF_MS = 1000;
  // Hashing runs off the main thread; a few files at once keep the disk busy without holding
  // more than a few photos in memory.
  var HASH_CONCURRENCY = 4;
  // Hashes wait this long for others to join their check request, so that sending starts soon
  // after a drop instead of after the whole folder is hashed.
  var CHECK_WAIT_MS = 250;
  var ARCHIVE_POLL_MS = 1000;
  // Rows written per animation frame: a drop of 10,000 files never blocks the page for long.
  var ROWS_PER_FRAME = 400;
  var ADD_PER_TASK = 100;
  // Rows per group: the browser lays out and paints only the groups on screen.
  var ROWS_PER_GROUP = 100;
  // The live region speaks at most this often (a screen reader cannot keep up with every file).
  var ANNOUNCE_MS = 5000;
  // What operating systems and archivers leave in folders; never photos of the collection.
  var JUNK_NAMES = ["Thumbs.db", "desktop.ini"];
  var SETTLED = {added: true, duplicate: true, refused: true, archive: true};
  var PENDING = {hashing: true, checking: true, queued: true, sending: true, waiting: true};
  var canHash = !!(window.isSecureContext && window.crypto && window.crypto.subtle);

  var classicForm = document.querySelector("form.classic-upload");
  var dropZone = section.querySelector(".drop-zone");
  var filesInput = section.querySelector("#bulk-files");
  var folderInput = section.querySelector("#bulk-folder");
  var captionInput = section.querySelector("#bulk-caption");
  var tagsInput = section.querySelector("#bulk-tags");
  var folderTagsInput = section.querySelector("#bulk-folder-tags");
  var progressBox = section.querySelector(".bulk-progress");
  var overall = section.querySelector("#bulk-overall");
  var overallPercent = section.querySelector(".overall-percent");
  var filesDone = section.querySelector(".files-done");
  var bytesDone = section.querySelector(".bytes-done");
  var rateText = section.querySelector(".rate");
  var timeLeftText = section.querySelector(".time-left");
  var summary = section.querySelector(".bulk-summary");
  var announcement = section.querySelector(".bulk-announcement");
  var cancelButton = section.querySelector(".cancel-button");
  var retryButton = section.querySelector(".retry-button");
  var inFlightList = section.querySelector(".in-flight");
  var inFlightHeading = section.querySelector(".sending-heading");
  var resultsTable = section.querySelector(".bulk-results");
  var resultsGroup = null;  // the last group of rows, which new rows join

  var items = [];
  var counts = {hashing: 0, checking: 0, queued: 0, sending: 0, waiting: 0,
                added: 0, duplicate: 0, refused: 0, archive: 0, failed: 0, cancelled: 0};
  var totalBytes = 0;
  var settledBytes = 0;  // bytes of files with their final answer (sent or not)
  var sentBytes = 0;  // bytes whose request was answered: what actually went over the wire
  var hashQueue = [], hashIndex = 0, hashing = 0;
  var checkBatch = [], checkTimer = null;
  var sendQueue = [], sendIndex = 0;
  var active = new Set();
  var dirtyRows = new Set();
  var frameRequested = false;
  var rateSamples = [];
  var busySince = null, busyMs = 0;  // time spent with files pending, for the average rate
  var lastAnnounced = 0, announceTimer = null;

  function positive(value, fallback) {
    var number = parseInt(value, 10);
    return number > 0 ? number : fallback;
  }

  // --- Adding files ------------------------------------------------------------------

  function isZip(file) {
    return /\.zip$/i.test(file.name) || file.type === "application/zip" || file.type === "application/x-zip-compressed";
  }

  function isJunk(path) {
    var name = path.split("/").pop();
    return name.charAt(0) === "." || JUNK_NAMES.indexOf(name) !== -1;
  }

  function folderNames(path) {
    return path.split("/").slice(0, -1).filter(Boolean);
  }

  // The options as they are when the files arrive: changing them later affects the next drop only.
  function currentOptions() {
    return {caption: captionInput.value.trim(), tags: tagsInput.value.trim(), folderTags: folderTagsInput.checked};
  }

  // Files are taken in a few hundred at a time: reading a picked file's size can cost the
  // browser a look at the disk, and 10,000 of them at once would freeze the page for seconds.
  function addFiles(entries) {
    var options = currentOptions();
    var next = 0;
    (function some() {
      var end = Math.min(next + ADD_PER_TASK, entries.length);
      for (; next < end; next += 1) addOne(entries[next], options);
      if (items.length) {
        progressBox.hidden = false;
        resultsTable.hidden = false;
      }
      if (next < entries.length) {
        setTimeout(some, 0);
      } else {
        announce(true);
      }
      pumpHashing();
      pumpSending();
      scheduleRender();
    })();
  }

  function addOne(entry, options) {
    if (isJunk(entry.path)) return;
    var checkTags = options.tags;
    if (options.folderTags) {
      checkTags = [options.tags].concat(folderNames(entry.path)).filter(Boolean).join(", ");
    }
    var item = {
      id: items.length, file: entry.file, path: entry.path, size: entry.file.size, zip: isZip(entry.file),
      options: options, checkTags: checkTags, state: null, attempts: 0, sent: 0, sha256: null,
      checked: false, detail: null, row: null, xhr: null, archive: null
    };
    items.push(item);
    totalBytes += item.size;
    enqueue(item);
  }

  // Where a new (or retried) file starts: hashed and checked when it can be, else sent.
  function enqueue(item) {
    item.attempts = 0;
    if (item.zip || !canHash) {
      item.checked = true;
    }
    if (item.checked) {
      setState(item, "queued");
      sendQueue.push(item);
    } else if (item.sha256) {
      setState(item, "checking");
      addToCheck(item);
    } else {
      setState(item, "hashing");
      hashQueue.push(item);
    }
  }

  function setState(item, state) {
    if (item.state) counts[item.state] -= 1;
    if (SETTLED[item.state]) settledBytes -= item.size;
    item.state = state;
    counts[state] += 1;
    if (SETTLED[state]) settledBytes += item.size;
  }

  function pendingCount() {
    return counts.hashing + counts.checking + counts.queued + counts.sending + counts.waiting;
  }

  // --- Hashing and the bulk check -------------------------------------------------------

  function sha256Hex(file) {
    return file.arrayBuffer().then(function (buffer) {
      return window.crypto.subtle.digest("SHA-256", buffer);
    }).then(function (digest) {
      return Array.prototype.map.call(new Uint8Array(digest), function (byte) {
        return byte.toString(16).padStart(2, "0");
      }).join("");
    });
  }

  function pumpHashing() {
    while (hashing < HASH_CONCURRENCY && hashIndex < hashQueue.length) {
      var item = hashQueue[hashIndex++];
      if (item.state !== "hashing") continue;
      hashing += 1;
      hashOne(item);
    }
    if (hashIndex >= hashQueue.length) {
      hashQueue = [];
      hashIndex = 0;
    }
  }

  function hashOne(item) {
    sha256Hex(item.file).then(function (hex) {
      item.sha256 = hex;
      if (item.state !== "hashing") return;
      setState(item, "checking");
      addToCheck(item);
    }, function () {
      // Unreadable here (moved or deleted since the drop): the upload will say so.
      if (item.state !== "hashing") return;
      item.checked = true;
      setState(item, "queued");
      sendQueue.push(item);
      pumpSending();
    }).then(function () {
      hashing -= 1;
      pumpHashing();
      if (!hashing && !hashQueue.length && checkBatch.length) flushCheck();
      scheduleRender();
    });
  }

  function addToCheck(item) {
    checkBatch.push(item);
    if (checkBatch.length >= config.checkMax) {
      flushCheck();
    } else if (!checkTimer) {
      checkTimer = setTimeout(flushCheck, CHECK_WAIT_MS);
    }
  }

  function flushCheck() {
    clearTimeout(checkTimer);
    checkTimer = null;
    var batch = checkBatch;
    checkBatch = [];
    // One request per set of tags: with folder tags, each folder's duplicates get their own.
    var groups = new Map();
    batch.forEach(function (item) {
      if (!groups.has(item.checkTags)) groups.set(item.checkTags, []);
      groups.get(item.checkTags).push(item);
    });
    groups.forEach(function (group, tags) {
      for (var start = 0; start < group.length; start += config.checkMax) {
        checkRequest(group.slice(start, start + config.checkMax), tags, 0);
      }
    });
  }

  function checkRequest(batch, tags, attempt) {
    var hashes = Array.from(new Set(batch.map(function (item) { return item.sha256; })));
    var body = {sha256: hashes};
    if (tags) body.tags = tags;
    fetch(config.checkUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": config.csrfToken},
      body: JSON.stringify(body)
    }).then(function (response) {
      if (response.ok) return response.json();
      var error = new Error("HTTP " + response.status);
      error.status = response.status;
      throw error;
    }).then(function (answer) {
      var known = new Map();
      (answer.known || []).forEach(function (entry) { known.set(entry.sha256, entry.image); });
      batch.forEach(function (item) {
        if (item.state !== "checking") return;
        item.checked = true;
        if (known.has(item.sha256)) {
          settle(item, "duplicate", {image: known.get(item.sha256)});
        } else {
          setState(item, "queued");
          sendQueue.push(item);
        }
      });
      pumpSending();
      scheduleRender();
    }).catch(function (error) {
      var status = error.status || 0;
      if (retryable(status) && attempt < config.retries) {
        setTimeout(function () { checkRequest(batch, tags, attempt + 1); }, backoff(attempt + 1));
        return;
      }
      // No answer to rely on: send the files; the server still reports exact duplicates.
      batch.forEach(function (item) {
        if (item.state !== "checking") return;
        item.checked = true;
        setState(item, "queued");
        sendQueue.push(item);
      });
      pumpSending();
      scheduleRender();
    });
  }

  // --- Sending ------------------------------------------------------------------------

  function retryable(status) {
    return status === 0 || status === 429 || status >= 500;
  }

  function backoff(attempt, retryAfterSeconds) {
    var delay = BACKOFF_MS * Math.pow(2, attempt - 1) * (0.75 + Math.random() / 2);
    return Math.max(delay, (retryAfterSeconds || 0) * 1000);
  }

  function pumpSending() {
    while (active.size < config.concurrency && sendIndex < sendQueue.length) {
      var item = sendQueue[sendIndex++];
      if (item.state === "queued") send(item);
    }
    if (sendIndex >= sendQueue.length) {
      sendQueue = [];
      sendIndex = 0;
    }
  }

  function send(item) {
    setState(item, "sending");
    item.sent = 0;
    active.add(item);
    var form = new FormData();
    form.append("file", item.file, item.file.name);
    form.append("path", item.path);
    if (item.options.caption) form.append("caption", item.options.caption);
    if (item.options.tags) form.append("tags", item.options.tags);
    if (item.options.folderTags) form.append("folder_tags", "true");
    var xhr = new XMLHttpRequest();
    item.xhr = xhr;
    xhr.open("POST", config.uploadUrl);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", config.csrfToken);
    xhr.upload.onprogress = function (event) {
      item.sent = event.loaded;
      scheduleRender();
    };
    xhr.onload = function () {
      answered(item, xhr.status, parseJSON(xhr.responseText), xhr.getResponseHeader("Retry-After"));
    };
    xhr.onerror = xhr.ontimeout = function () { answered(item, 0, null, null); };
    xhr.onabort = function () {
      active.delete(item);
      item.xhr = null;
      scheduleRender();
    };
    xhr.send(form);
    scheduleRender();
  }

  function parseJSON(text) {
    try {
      return JSON.parse(text);
    } catch (error) {
      return null;
    }
  }

  function errorMessage(status, body) {
    var error = body && body.error;
    if (error && error.fields && error.fields.file) {
      var reason = error.fields.file;
      return Array.isArray(reason) ? reason.join(" ") : String(reason);
    }
    if (error && error.message) return error.message;
    if (status === 413) return "The file is larger than the site accepts.";
    if (status === 0) return "The connection failed.";
    if (status === 429) return "The server was busy (429 Too Many Requests).";
    return "The server answered " + status + ".";
  }

  function answered(item, status, body, retryAfter) {
    active.delete(item);
    item.xhr = null;
    if (item.state !== "sending") return;  // cancelled meanwhile
    if (status >= 200 && status < 300) {
      sentBytes += item.size;
      var kind = (body && body.status) || (status === 202 ? "archive" : status === 201 ? "added" : "duplicate");
      if (kind === "archive" && body && body.archive) {
        settle(item, "archive", body);
        item.archive = body.archive;
        pollArchive(item, 0);
      } else {
        settle(item, kind === "duplicate" ? "duplicate" : "added", body || {});
      }
    } else if (retryable(status) && item.attempts < config.retries) {
      item.attempts += 1;
      setState(item, "waiting");
      item.sent = 0;
      markRow(item);
      setTimeout(function () {
        if (item.state !== "waiting") return;
        setState(item, "queued");
        sendQueue.push(item);
        pumpSending();
      }, backoff(item.attempts, parseFloat(retryAfter)));
    } else if (retryable(status)) {
      item.sent = 0;
      var tries = item.attempts + 1;
      settle(item, "failed", {reason: errorMessage(status, body) + " Tried " + tries + (tries === 1 ? " time." : " times.")});
    } else {
      // A 4xx is the server's judgement of the file: final, never retried.
      sentBytes += item.size;
      settle(item, "refused", {reason: errorMessage(status, body)});
    }
    pumpSending();
    scheduleRender();
  }

  function settle(item, state, detail) {
    setState(item, state);
    item.detail = detail;
    markRow(item);
    if (!pendingCount()) announce(true);
  }

  // --- Zips: the worker expands them; their status comes from the archive endpoint ------

  function pollArchive(item, failures) {
    var archive = item.archive;
    if (!archive || archive.state === "done" || archive.state === "failed") return;
    setTimeout(function () {
      fetch(config.archiveUrl.replace(/\/0\/$/, "/" + archive.id + "/"), {
        credentials: "same-origin", headers: {"Accept": "application/json"}
      }).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      }).then(function (status) {
        var finished = status.state === "done" || status.state === "failed";
        item.archive = status;
        if (finished) announce(true);
        markRow(item);
        scheduleRender();
        pollArchive(item, 0);
      }).catch(function () {
        // The server is away for a moment: ask again, more slowly, a bounded number of times.
        if (failures < config.retries + 3) {
          pollArchive(item, failures + 1);
        } else {
          item.archive = Object.assign({}, archive, {pollFailed: true});
          markRow(item);
          scheduleRender();
        }
      });
    }, ARCHIVE_POLL_MS * Math.pow(2, Math.min(failures, 4)));
  }

  // --- Cancel and retry ---------------------------------------------------------------

  function cancel() {
    items.forEach(function (item) {
      if (!PENDING[item.state]) return;
      var xhr = item.xhr;
      settle(item, "cancelled", {reason: "Cancelled before the server answered."});
      item.sent = 0;
      if (xhr) xhr.abort();
    });
    hashQueue = [];
    hashIndex = 0;
    checkBatch = [];
    sendQueue = [];
    sendIndex = 0;
    announce(true);
    render();
  }

  function retryFailed() {
    var again = items.filter(function (item) { return item.state === "failed" || item.state === "cancelled"; });
    again.forEach(function (item) {
      enqueue(item);
      markRow(item);
    });
    announce(true);
    pumpHashing();
    pumpSending();
    render();
  }

  // --- What the page shows --------------------------------------------------------------

  function markRow(item) {
    dirtyRows.add(item);
    scheduleRender();
  }

  function scheduleRender() {
    if (frameRequested) return;
    frameRequested = true;
    window.requestAnimationFrame(function () {
      frameRequested = false;
      render();
    });
  }

  function formatBytes(bytes) {
    var units = ["B", "KB", "MB", "GB", "TB"];
    var unit = 0;
    while (bytes >= 1000 && unit < units.length - 1) {
      bytes /= 1000;
      unit += 1;
    }
    return (unit ? bytes.toFixed(bytes < 10 ? 1 : 0) : String(bytes)) + " " + units[unit];
  }

  function formatDuration(seconds) {
    if (!isFinite(seconds)) return "–";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function inFlightBytes() {
    var bytes = 0;
    active.forEach(function (item) { bytes += item.sent; });
    return bytes;
  }

  // Bytes per second over the last few seconds of sending.
  function currentRate(now, sending) {
    rateSamples.push({time: now, bytes: sending});
    while (rateSamples.length > 2 && now - rateSamples[0].time > 5000) rateSamples.shift();
    var first = rateSamples[0];
    var seconds = (now - first.time) / 1000;
    return seconds > 0.5 ? (sending - first.bytes) / seconds : null;
  }

  function render() {
    var now = performance.now();
    var flying = inFlightBytes();
    var done = counts.added + counts.duplicate + counts.refused + counts.archive;
    var settledOrSent = settledBytes + flying;
    var percent = totalBytes ? Math.floor(100 * settledOrSent / totalBytes) : (items.length ? Math.floor(100 * done / items.length) : 0);
    if (done === items.length && items.length) percent = 100;
    else percent = Math.min(percent, 99);
    overall.value = percent;
    overall.textContent = percent + " %";
    overallPercent.textContent = percent + " %";
    filesDone.textContent = done + " of " + items.length + (items.length === 1 ? " file done" : " files done");
    bytesDone.textContent = formatBytes(settledOrSent) + " of " + formatBytes(totalBytes);
    var pending = pendingCount();
    if (pending && busySince === null) busySince = now;
    if (!pending && busySince !== null) {
      busyMs += now - busySince;
      busySince = null;
      rateSamples = [];
    }
    if (pending) {
      var rate = currentRate(now, sentBytes + flying);
      rateText.textContent = rate ? formatBytes(rate) + "/s" : "measuring the rate";
      timeLeftText.textContent = rate ? formatDuration((totalBytes - settledOrSent) / rate) + " left" : "estimating the time left";
    } else {
      // Finished (or stopped): the rate over the whole time spent, and that time.
      rateText.textContent = busyMs > 0 ? formatBytes(sentBytes / (busyMs / 1000)) + "/s on average" : "–";
      timeLeftText.textContent = "took " + formatDuration(busyMs / 1000);
    }
    cancelButton.hidden = !pending;
    var retriable = counts.failed + counts.cancelled;
    retryButton.hidden = !retriable;
    retryButton.textContent = "Retry the failed ones (" + retriable + ")";
    var text = summaryText();
    if (summary.textContent !== text) summary.textContent = text;
    renderInFlight();
    renderRows();
    announce(false);
  }

  function renderInFlight() {
    var existing = new Map();
    Array.prototype.forEach.call(inFlightList.children, function (li) { existing.set(li.dataset.item, li); });
    active.forEach(function (item) {
      var li = existing.get(String(item.id));
      if (li) {
        existing.delete(String(item.id));
      } else {
        li = document.createElement("li");
        li.dataset.item = String(item.id);
        var label = document.createElement("span");
        label.className = "name";
        label.id = "sending-" + item.id;
        label.textContent = item.path;
        var bar = document.createElement("progress");
        bar.max = Math.max(item.size, 1);
        bar.setAttribute("aria-labelledby", label.id);
        li.append(label, bar);
        inFlightList.append(li);
      }
      li.querySelector("progress").value = item.sent;
    });
    existing.forEach(function (li) { li.remove(); });
    inFlightHeading.hidden = !active.size;
  }

  function cell(role) {
    var element = document.createElement("span");
    element.setAttribute("role", role);
    return element;
  }

  function renderRows() {
    if (!dirtyRows.size) return;
    var written = 0;
    for (var item of dirtyRows) {
      if (written >= ROWS_PER_FRAME) break;
      dirtyRows.delete(item);
      written += 1;
      if (!item.row) {
        item.row = document.createElement("div");
        item.row.setAttribute("role", "row");
        item.row.dataset.path = item.path;
        var name = cell("rowheader");
        name.textContent = item.path;
        item.row.append(name, cell("cell"), cell("cell"));
        if (!resultsGroup || resultsGroup.childElementCount >= ROWS_PER_GROUP) {
          resultsGroup = document.createElement("div");
          resultsGroup.setAttribute("role", "rowgroup");
          resultsGroup.className = "results-group";
          resultsTable.append(resultsGroup);
        }
        resultsGroup.append(item.row);
      }
      fillRow(item);
    }
    if (dirtyRows.size) scheduleRender();
  }

  function imageLink(image) {
    var link = document.createElement("a");
    link.href = config.changeUrl.replace(/\/0\//, "/" + image.id + "/");
    link.textContent = String(image.id);
    return link;
  }

  function thumbnail(image) {
    if (!image || !image.thumbnail_url) return null;
    var img = document.createElement("img");
    img.src = image.thumbnail_url;
    img.alt = "";
    img.width = 80;
    img.loading = "lazy";
    img.decoding = "async";
    return img;
  }

  function fillRow(item) {
    var row = item.row;
    var result = row.children[1];
    var picture = row.children[2];
    row.className = "result outcome-" + (item.state === "waiting" || item.state === "queued" || item.state === "hashing" || item.state === "checking" ? "pending" : item.state);
    result.textContent = "";
    picture.textContent = "";
    var image = item.detail && item.detail.image;
    if (item.state === "added") {
      result.append("added as image ", imageLink(image));
    } else if (item.state === "duplicate") {
      result.append("already in the gallery: image ", imageLink(image));
      if (image.caption) result.append(" (" + image.caption + ")");
    } else if (item.state === "refused") {
      result.textContent = "refused: " + item.detail.reason;
    } else if (item.state === "failed") {
      result.textContent = "not sent: " + item.detail.reason;
    } else if (item.state === "cancelled") {
      result.textContent = "not sent: cancelled.";
    } else if (item.state === "archive") {
      fillArchive(result, item.archive || {});
    } else if (item.state === "waiting") {
      result.textContent = "no answer yet; trying again (attempt " + (item.attempts + 1) + ")…";
    } else {
      result.textContent = "waiting to be sent again…";
    }
    var thumb = thumbnail(image);
    if (thumb) picture.append(thumb);
  }

  function fillArchive(cell, archive) {
    var total = archive.members_total || 0;
    var doneMembers = archive.members_done || 0;
    var tally = (archive.added || 0) + " added, " + (archive.duplicates || 0) + " already in the gallery, " +
      (archive.refused || 0) + " refused";
    if (archive.state === "done") {
      cell.append("zip expanded: " + doneMembers + " of " + total + " members done (" + tally + ")");
    } else if (archive.state === "failed") {
      cell.append("zip refused: " + (archive.error || "it could not be expanded"));
    } else {
      cell.append("zip stored; " + (archive.state === "expanding" ? "expanding" : "waiting for a worker") + ": " +
        doneMembers + " of " + total + " members done (" + tally + ")");
      var bar = document.createElement("progress");
      bar.max = Math.max(total, 1);
      bar.value = doneMembers;
      bar.setAttribute("aria-label", "Members of " + (archive.name || "the zip") + " done");
      cell.append(" ", bar);
      if (archive.pollFailed) cell.append(" (its status could not be read; reload the page to see it)");
    }
    var refusals = archive.refusals || [];
    if (refusals.length) {
      var details = document.createElement("details");
      var title = document.createElement("summary");
      title.textContent = "Refused members";
      var list = document.createElement("ul");
      refusals.forEach(function (refusal) {
        var li = document.createElement("li");
        li.textContent = refusal.name + ": " + refusal.reason;
        list.append(li);
      });
      details.append(title, list);
      cell.append(details);
    }
  }

  function summaryText() {
    var parts = [counts.added + " added", counts.duplicate + " already in the gallery", counts.refused + " refused"];
    if (counts.archive) {
      var expanding = items.filter(function (item) {
        return item.state === "archive" && item.archive && item.archive.state !== "done" && item.archive.state !== "failed";
      }).length;
      parts.push(counts.archive + (counts.archive === 1 ? " zip" : " zips") + " stored" +
        (expanding ? " (" + expanding + " being expanded)" : " and expanded"));
    }
    if (counts.failed) parts.push(counts.failed + " failed");
    if (counts.cancelled) parts.push(counts.cancelled + " cancelled");
    var pending = pendingCount();
    if (pending) return "Uploading: " + pending + " of " + items.length + " files to go; " + parts.join(", ") + ".";
    return "Finished: " + parts.join(", ") + ".";
  }

  function announce(now) {
    var due = Date.now() - lastAnnounced >= ANNOUNCE_MS;
    if (now || due || !pendingCount()) {
      clearTimeout(announceTimer);
      announceTimer = null;
      var text = summaryText();
      if (announcement.textContent !== text) announcement.textContent = text;
      lastAnnounced = Date.now();
    } else if (!announceTimer) {
      announceTimer = setTimeout(function () {
        announceTimer = null;
        announce(true);
      }, ANNOUNCE_MS);
    }
  }

  // --- Folders from a drop: DataTransfer entries, walked ---------------------------------

  function entryFile(entry) {
    return new Promise(function (resolve, reject) { entry.file(resolve, reject); });
  }

  function readAll(reader) {
    // readEntries answers a hundred entries at a time; an empty answer means the end.
    return new Promise(function (resolve, reject) {
      var all = [];
      (function next() {
        reader.readEntries(function (batch) {
          if (!batch.length) return resolve(all);
          all = all.concat(batch);
          next();
        }, reject);
      })();
    });
  }

  function walk(entry, out) {
    var path = entry.fullPath.replace(/^\//, "");
    if (entry.isFile) {
      return entryFile(entry).then(function (file) { out.push({file: file, path: path || file.name}); }, function () {});
    }
    if (entry.isDirectory) {
      return readAll(entry.createReader()).then(function (children) {
        return children.reduce(function (chain, child) {
          return chain.then(function () { return walk(child, out); });
        }, Promise.resolve());
      }, function () {});
    }
    return Promise.resolve();
  }

  function filesFromDrop(dataTransfer) {
    // The entries must be read during the drop event; their files may be read later.
    var entries = [];
    var loose = [];
    Array.prototype.forEach.call(dataTransfer.items || [], function (entryItem) {
      if (entryItem.kind !== "file") return;
      var entry = entryItem.webkitGetAsEntry ? entryItem.webkitGetAsEntry() : null;
      if (entry) {
        entries.push(entry);
      } else {
        var file = entryItem.getAsFile();
        if (file) loose.push({file: file, path: file.name});
      }
    });
    if (!entries.length && !loose.length) {
      Array.prototype.forEach.call(dataTransfer.files || [], function (file) { loose.push({file: file, path: file.name}); });
    }
    var out = loose;
    return entries.reduce(function (chain, entry) {
      return chain.then(function () { return walk(entry, out); });
    }, Promise.resolve()).then(function () { return out; });
  }

  function fromInput(input) {
    var entries = Array.prototype.map.call(input.files, function (file) {
      return {file: file, path: file.webkitRelativePath || file.name};
    });
    input.value = "";  // so that choosing the same files again is noticed
    addFiles(entries);
  }

  function hasFiles(event) {
    return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types || [], "Files") !== -1;
  }

  // --- Start ----------------------------------------------------------------------------

  // Every current browser picks folders this way; the attribute is not in the HTML standard,
  // so it is set here rather than written in the page.
  folderInput.webkitdirectory = true;
  if (classicForm) classicForm.hidden = true;
  section.hidden = false;
  if (!canHash) {
    var note = document.createElement("p");
    note.className = "help";
    note.textContent = "This page is not served over HTTPS, so the browser cannot fingerprint files: every file " +
      "is sent, and the server reports those the gallery already holds.";
    dropZone.append(note);
  }

  section.querySelector(".bulk-options-form").addEventListener("submit", function (event) { event.preventDefault(); });
  filesInput.addEventListener("change", function () { fromInput(filesInput); });
  folderInput.addEventListener("change", function () { fromInput(folderInput); });
  dropZone.addEventListener("dragover", function (event) {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropZone.classList.add("over");
  });
  dropZone.addEventListener("dragleave", function () { dropZone.classList.remove("over"); });
  dropZone.addEventListener("drop", function (event) {
    event.preventDefault();
    dropZone.classList.remove("over");
    filesFromDrop(event.dataTransfer).then(addFiles);
  });
  // A drop that misses the zone must not replace the page (and its uploads) with the file.
  ["dragover", "drop"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      if (hasFiles(event) && !dropZone.contains(event.target)) event.preventDefault();
    });
  });
  cancelButton.addEventListener("click", cancel);
  retryButton.addEventListener("click", retryFailed);
  window.addEventListener("beforeunload", function (event) {
    if (!pendingCount()) return;
    event.preventDefault();
    event.returnValue = "";  // older browsers need a value to ask
  });
})();
