/*
 * sse-relay-resume.js: htmx's SSE extension resumes from the last event it
 * received when it opens a new EventSource, instead of starting from now.
 *
 * EventSource resumes by itself (it sends Last-Event-ID) while it is
 * reconnecting. Once it gives up, though (CLOSED: a 502 or 503 from a proxy
 * during a deploy, any status but 200), htmx-ext-sse 2.x opens a new one
 * from the element's sse-connect URL, which knows no id: whatever was
 * published meanwhile is lost. This script writes the id of every event htmx
 * handles into that URL as ?last_event_id=, which caddy-sse-relay takes as a
 * first connection's position, so the new EventSource resumes where the old
 * one stopped. With the relay's history on, ids are positions in its log
 * (for a stream of several Redis channels, one per channel), valid on any
 * node.
 *
 * Load it after htmx and its SSE extension; no build step:
 *   <script src="/static/sse-relay-resume.js"></script>
 *
 * Only events htmx handles (an sse-swap or hx-trigger="sse:…" names them)
 * move the cursor; the others are not shown anyway. A page whose URL
 * carries no cursor (see {% sse_url %} with SSE_RELAY_HISTORY) and that is
 * cut off before its first event still starts from now.
 */
(function () {
	"use strict";

	var CONNECT = ["sse-connect", "data-sse-connect"];

	// The element that owns each EventSource, from htmx:sseOpen, so that an
	// event still finds it when its sse-swap element was swapped away.
	var owners = new WeakMap();

	document.addEventListener("htmx:sseOpen", function (evt) {
		if (evt.detail && evt.detail.source) {
			owners.set(evt.detail.source, evt.target);
		}
	});

	// htmx-ext-sse fires htmx:sseMessage on the sse-swap (or hx-trigger)
	// element with the MessageEvent as detail, after handling it.
	document.addEventListener("htmx:sseMessage", function (evt) {
		var message = evt.detail;
		if (!message || !message.lastEventId) {
			return;
		}
		var owner = owners.get(message.target) || closestConnect(evt.target);
		if (owner) {
			remember(owner, message.lastEventId);
		}
	});

	function closestConnect(elt) {
		return elt && elt.closest ? elt.closest("[sse-connect],[data-sse-connect]") : null;
	}

	// remember puts id in the owner's stream URL, which htmx reads again
	// whenever it opens a new EventSource for it.
	function remember(owner, id) {
		for (var i = 0; i < CONNECT.length; i++) {
			var url = owner.getAttribute(CONNECT[i]);
			if (url) {
				owner.setAttribute(CONNECT[i], withCursor(url, id));
			}
		}
	}

	function withCursor(url, id) {
		var u = new URL(url, document.baseURI);
		if (u.searchParams.get("last_event_id") === id) {
			return url;
		}
		u.searchParams.set("last_event_id", id);
		// A same-origin URL stays relative, as it was written.
		return u.origin === location.origin ? u.pathname + u.search + u.hash : u.href;
	}
})();
