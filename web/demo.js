// Comet demo page: five panels, one per transport, each written with the browser's own
// primitives so that the code reads as a tutorial. The wire protocol is docs/protocol.md.
//
// Rule for the whole file: message data is untrusted (anyone can publish with curl), so it only
// ever reaches the page through textContent and DOM APIs, never innerHTML.
'use strict';

(function () {
  // ---------------------------------------------------------------- small helpers

  var WIRE_LINES = 8; // raw frames kept in each panel's wire log

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(ms) {
    return new Date(ms === undefined ? Date.now() : ms).toLocaleTimeString();
  }

  function clip(text, max) {
    text = String(text);
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }

  // JSON.parse that returns null instead of throwing: payloads come from anyone.
  function parseJSON(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  // ws:// or wss:// on the page's own host, so the demo works behind TLS too.
  function wsURL(path) {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
  }

  // The parts every panel shares: the status dot, a note line and the wire log.
  function panelKit(id) {
    var root = document.getElementById(id);
    var status = root.querySelector('.status');
    var note = root.querySelector('.note');
    var wire = root.querySelector('.wire ol');
    var count = root.querySelector('.wire-count');
    var frames = 0;
    return {
      root: root,
      find: function (sel) { return root.querySelector(sel); },
      // state is 'connecting', 'open' or 'error'; the label defaults to the state.
      status: function (state, label) {
        status.setAttribute('data-state', state);
        status.querySelector('.status-text').textContent = label || state;
      },
      note: function (text) {
        note.textContent = clock() + ' — ' + text;
        note.hidden = false;
      },
      wire: function (raw) {
        var li = el('li');
        li.appendChild(el('time', null, clock()));
        li.appendChild(el('code', null, clip(raw, 300)));
        wire.appendChild(li);
        while (wire.children.length > WIRE_LINES) wire.removeChild(wire.firstChild);
        count.textContent = '(' + (++frames) + ')';
      }
    };
  }

  // ---------------------------------------------------------------- who is online
  // The demo namespace tracks presence (comet serve --demo): each chat panel lists the
  // connections in its channel, from the presence listing and then join and leave events.
  // A listing and the events travel separately (a fetch beside the stream; on a WebSocket the
  // listing is read while events keep coming), so a join can arrive before a listing taken
  // earlier. Events seen while a listing is on its way are kept and replayed over it: for a set,
  // replaying every event since some point over a snapshot taken after that point gives the
  // current members (each client's last event decides).
  function membersView(line) {
    var ids = new Set();
    var asked = 0; // listings on their way
    var seen = []; // [kind, client] since the oldest of them was asked
    function render() {
      line.textContent = '';
      line.appendChild(el('b', null, String(ids.size)));
      line.appendChild(document.createTextNode(' online'));
      line.setAttribute('data-count', String(ids.size));
    }
    function event(kind, client) {
      if (kind === 'join') ids.add(client); else ids.delete(client);
      if (asked > 0) seen.push([kind, client]);
      render();
    }
    function answered() {
      if (--asked === 0) seen = [];
    }
    return {
      // Takes a promise of the listing ([{client}, …]); asked right before the request goes out.
      load: function (listing) {
        asked++;
        listing.then(function (clients) {
          ids = new Set(clients.map(function (c) { return c.client; }));
          seen.forEach(function (e) { if (e[0] === 'join') ids.add(e[1]); else ids.delete(e[1]); });
          answered();
          render();
        }, answered);
      },
      join: function (client) { event('join', client); },
      leave: function (client) { event('leave', client); }
    };
  }

  // The comet.js panels (client-demo.js) draw their member lists the same way.
  window.cometDemoMembersView = membersView;

  // ---------------------------------------------------------------- shared chat rendering
  // Panels 3 and 4 differ only in transport; this draws the list and reads the form.
  // onSend(nick, text) returns true when the message went out (then the input is cleared).

  function chatView(kit, onSend) {
    var list = kit.find('.chat-list');
    var nick = kit.find('.nick-input');
    var input = kit.find('.chat-input');
    var seen = new Set(); // message ids already shown: a resume never shows one twice

    nick.value = 'guest-' + (100 + Math.floor(Math.random() * 900));

    kit.find('.chat-form').addEventListener('submit', function (e) {
      e.preventDefault(); // Enter in the input submits the form; we send it ourselves
      var text = input.value.trim();
      if (!text) return;
      if (onSend(nick.value.trim() || 'anonymous', text)) input.value = '';
    });

    return {
      // Show one message; returns false when its id was already shown.
      add: function (id, data, time) {
        if (seen.has(id)) return false;
        seen.add(id);
        var msg = parseJSON(data);
        var who = msg && typeof msg.nick === 'string' ? msg.nick : '?';
        var text = msg && typeof msg.text === 'string' ? msg.text : String(data);
        var nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
        var li = el('li');
        li.appendChild(el('time', null, clock(time)));
        li.appendChild(el('b', who === nick.value.trim() ? 'me' : null, clip(who, 32)));
        li.appendChild(el('span', null, clip(text, 500)));
        li.title = 'id ' + id;
        list.appendChild(li);
        while (list.children.length > 200) list.removeChild(list.firstChild);
        if (nearBottom) list.scrollTop = list.scrollHeight;
        return true;
      }
    };
  }

  // ---------------------------------------------------------------- 1. short polling (XHR)
  // The oldest trick: ask every second "anything new since <cursor>?". The server answers at
  // once, with an empty list when nothing is new, and a cursor to send back next time.

  function progressByPolling() {
    var kit = panelKit('p-poll');
    var fill = kit.find('.progress-fill');
    var bar = kit.find('.progress');
    var label = kit.find('.progress-label');
    var job = kit.find('.job');
    var meta = kit.find('.poll-meta');
    var cursor = 'earliest'; // first poll replays history so the bar shows the latest state
    var polls = 0;

    function show(envelope) {
      var p = parseJSON(envelope.data);
      if (!p || typeof p.percent !== 'number') return;
      var pct = Math.max(0, Math.min(100, p.percent));
      fill.style.width = pct + '%';
      label.textContent = Math.round(pct) + '%';
      bar.setAttribute('aria-valuenow', String(Math.round(pct)));
      bar.classList.toggle('done', pct >= 100);
      job.textContent = p.job === undefined ? '–' : String(p.job);
    }

    function poll() {
      var xhr = new XMLHttpRequest();
      xhr.open('GET', '/sub/demo:progress?transport=poll&since=' + encodeURIComponent(cursor));
      xhr.onload = function () {
        kit.wire(xhr.status + ' ' + xhr.responseText);
        var body = parseJSON(xhr.responseText);
        if (xhr.status === 400 && body && body.error && body.error.code === 'bad_cursor') {
          cursor = 'earliest'; // our cursor is unusable: start over from history
          kit.status('error', 'bad cursor');
          return setTimeout(poll, 1000);
        }
        if (xhr.status !== 200 || !body || !Array.isArray(body.messages)) {
          kit.status('error', 'HTTP ' + xhr.status);
          return setTimeout(poll, 1000);
        }
        kit.status('open', 'polling');
        if (body.gap) kit.note('gap: history no longer reached our cursor (' + (body.gaps || []).join(', ') + ')');
        // Only the newest state matters for a progress bar.
        if (body.messages.length) show(body.messages[body.messages.length - 1]);
        if (body.cursor) cursor = body.cursor;
        meta.textContent = 'poll #' + (++polls) + ' at ' + clock() + ': ' + body.messages.length +
          ' message(s), cursor ' + cursor;
        // A full batch means more is waiting: poll again at once instead of in a second.
        setTimeout(poll, body.messages.length >= 256 ? 0 : 1000);
      };
      xhr.onerror = function () {
        kit.status('error', 'network error');
        setTimeout(poll, 1000);
      };
      xhr.send();
    }

    poll();
  }

  // ---------------------------------------------------------------- 2. Server-Sent Events
  // One response that never ends; the browser parses "id:/event:/data:" lines into events and,
  // if the connection drops, reconnects by itself sending Last-Event-ID so nothing is missed.

  function stockBySSE() {
    var kit = panelKit('p-sse');
    var symbol = kit.find('.ticker-symbol');
    var price = kit.find('.ticker-price');
    var change = kit.find('.ticker-change');
    var line = kit.find('.sparkline polyline');
    var meta = kit.find('.stock-meta');
    var prices = [];
    var lastId = null;

    function sparkline() {
      var lo = Math.min.apply(null, prices), hi = Math.max.apply(null, prices);
      var span = hi - lo || 1;
      var step = 300 / 59;
      var pts = prices.map(function (v, i) {
        var x = (300 - (prices.length - 1) * step) + i * step; // newest point on the right edge
        var y = 56 - ((v - lo) / span) * 52;
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      line.setAttribute('points', pts.join(' '));
    }

    function connect(url) {
      kit.status('connecting');
      var es = new EventSource(url);
      es.onopen = function () { kit.status('open'); };
      es.onmessage = function (e) {
        // One channel: e.data is exactly what was published, e.lastEventId its cursor.
        kit.wire('id: ' + e.lastEventId + '\ndata: ' + e.data);
        lastId = e.lastEventId;
        var t = parseJSON(e.data);
        if (!t || typeof t.price !== 'number') return;
        var ch = typeof t.change === 'number' ? t.change : 0;
        symbol.textContent = clip(t.symbol || '?', 12);
        price.textContent = t.price.toFixed(2);
        change.textContent = (ch > 0 ? '▲ +' : ch < 0 ? '▼ ' : '■ ') + ch.toFixed(2);
        change.setAttribute('data-dir', ch > 0 ? 'up' : ch < 0 ? 'down' : 'flat');
        prices.push(t.price);
        if (prices.length > 60) prices.shift();
        sparkline();
        meta.textContent = 'tick at ' + clock(t.time) + ' · id ' + e.lastEventId;
      };
      // Comet's own notice: history no longer reached our Last-Event-ID.
      es.addEventListener('comet.gap', function (e) {
        kit.wire('event: comet.gap\ndata: ' + e.data);
        kit.note('gap on ' + e.data + ': some ticks were missed');
      });
      es.onerror = function () {
        if (es.readyState === EventSource.CONNECTING) {
          kit.status('connecting', 'reconnecting'); // the browser retries by itself
        } else {
          // CLOSED: the browser gave up (an HTTP error). Start a new one, resuming by hand.
          kit.status('error', 'closed');
          es.close();
          setTimeout(function () {
            connect('/sub/demo:stock' + (lastId ? '?since=' + encodeURIComponent(lastId) : ''));
          }, 5000);
        }
      };
    }

    connect('/sub/demo:stock');
  }

  // ---------------------------------------------------------------- 3. WebSocket chat
  // One socket carries JSON frames both ways. The URL subscribes on connect; after a drop we
  // open a bare /ws socket and subscribe again from the last id we saw, so nothing is doubled.

  function chatByWebSocket() {
    var kit = panelKit('p-ws');
    var members = membersView(kit.find('.members'));
    var listing = null; // the pending presence answer's { resolve, reject }
    var ws = null;
    var lastId = null;
    var ref = 0;
    var retry = 1000;
    var view = chatView(kit, function (nick, text) {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        kit.note('not connected, try again in a moment');
        return false;
      }
      ws.send(JSON.stringify({
        type: 'publish', channel: 'demo:chat',
        data: JSON.stringify({ nick: nick, text: text }), ref: String(++ref)
      }));
      return true;
    });

    function connect(first) {
      kit.status('connecting');
      ws = new WebSocket(wsURL(first ? '/sub/demo:chat?since=earliest' : '/ws'), 'comet.v1');
      ws.onopen = function () {
        kit.status('open');
        retry = 1000;
        if (!first) ws.send(JSON.stringify({ type: 'subscribe', channel: 'demo:chat', since: lastId || 'earliest' }));
      };
      ws.onmessage = function (e) {
        kit.wire(e.data);
        var f = parseJSON(e.data);
        if (!f) return;
        if (f.type === 'message' && f.channel === 'demo:chat') {
          view.add(f.id, f.data, f.time);
          lastId = f.id;
        } else if (f.type === 'subscribed') {
          if (f.recovered === false) kit.note('gap: history no longer reached our last message');
          members.load(new Promise(function (resolve, reject) { listing = { resolve: resolve, reject: reject }; }));
          ws.send(JSON.stringify({ type: 'presence', channel: 'demo:chat', ref: 'members' }));
        } else if (f.type === 'presence' && f.channel === 'demo:chat') {
          if (listing) listing.resolve(f.clients);
          listing = null;
        } else if ((f.type === 'join' || f.type === 'leave') && f.channel === 'demo:chat') {
          members[f.type](f.client);
        } else if (f.type === 'error') {
          kit.note('error ' + f.code + ': ' + f.message);
        }
        // 'ack' needs nothing: our own message comes back as a 'message' frame.
      };
      ws.onclose = function (e) {
        kit.status('error', 'closed ' + e.code + ', retrying');
        if (listing) listing.reject(new Error('closed'));
        listing = null;
        setTimeout(function () { connect(false); }, retry + Math.random() * 1000);
        retry = Math.min(retry * 2, 4000); // 1–5 s between attempts
      };
      // onerror is always followed by onclose, which does the reconnecting.
    }

    connect(true);
  }

  // ---------------------------------------------------------------- 4. XHR publish + SSE chat
  // Receiving and sending are separate HTTP requests: an EventSource to listen, a plain POST to
  // talk. EventSource cannot set headers, so ?since= picks the first start; on reconnect the
  // browser sends Last-Event-ID, which the server prefers over the query.

  function chatByXhrAndSSE() {
    var kit = panelKit('p-xhr-sse');
    var members = membersView(kit.find('.members'));
    var lastId = null;
    var view = chatView(kit, function (nick, text) {
      var xhr = new XMLHttpRequest();
      xhr.open('POST', '/pub/demo:chat2');
      xhr.setRequestHeader('Content-Type', 'text/plain');
      xhr.onload = function () {
        kit.wire('POST → ' + xhr.status + ' ' + xhr.responseText); // 201 {"channel","id"}
        if (xhr.status !== 201) {
          var err = parseJSON(xhr.responseText);
          kit.note('publish failed: ' + (err && err.error ? err.error.message : 'HTTP ' + xhr.status));
        }
      };
      xhr.onerror = function () { kit.note('publish failed: network error'); };
      xhr.send(JSON.stringify({ nick: nick, text: text }));
      return true;
    });

    function connect(url) {
      kit.status('connecting');
      var es = new EventSource(url);
      es.onopen = function () {
        kit.status('open');
        members.load(fetch('/channels/demo:chat2/presence', { cache: 'no-store' })
          .then(function (r) { return r.json(); })
          .then(function (p) { return p.clients || []; }));
      };
      // Joins and leaves carry no id: the stream's last event ID stays the last message's.
      ['join', 'leave'].forEach(function (kind) {
        es.addEventListener('comet.' + kind, function (e) {
          kit.wire('event: comet.' + kind + '\ndata: ' + e.data);
          var p = parseJSON(e.data);
          if (p && typeof p.client === 'string') members[kind](p.client);
        });
      });
      es.onmessage = function (e) {
        kit.wire('id: ' + e.lastEventId + '\ndata: ' + e.data);
        lastId = e.lastEventId;
        view.add(e.lastEventId, e.data, Date.now()); // raw data carries no time: use arrival
      };
      es.addEventListener('comet.gap', function (e) {
        kit.wire('event: comet.gap\ndata: ' + e.data);
        kit.note('gap on ' + e.data + ': some messages were missed');
      });
      es.onerror = function () {
        if (es.readyState === EventSource.CONNECTING) {
          kit.status('connecting', 'reconnecting');
        } else {
          kit.status('error', 'closed');
          es.close();
          setTimeout(function () {
            connect('/sub/demo:chat2?since=' + encodeURIComponent(lastId || 'earliest'));
          }, 5000);
        }
      };
    }

    connect('/sub/demo:chat2?since=earliest');
  }

  // ---------------------------------------------------------------- 5. hidden-iframe streaming
  // Before XHR streaming worked everywhere, Comet servers kept an <iframe> document loading
  // forever and pushed <script>parent.callback(obj)</script> chunks into it. The browser runs
  // each script as it arrives. The server ends the document after a byte budget (so the iframe
  // does not grow forever) and says where to resume; we then open a fresh iframe from there.

  function streamByIframe() {
    var kit = panelKit('p-iframe');
    var log = kit.find('.event-log');
    var meta = kit.find('.iframe-meta');
    var slot = kit.find('.iframe-slot');
    var channels = 'demo:stock,demo:progress';
    var lastIds = {};    // channel -> last cursor seen, to build a position ourselves
    var cursor = null;   // the server's position from a 'reconnect' notice, if newer
    var frame = null;    // the current iframe
    var opened = 0, retry = 1000;

    // "chan=id,chan2=id2": the position protocol.md lets a client build from its own cursors.
    function position() {
      return Object.keys(lastIds).map(function (c) { return c + '=' + lastIds[c]; }).join(',');
    }

    function open(since) {
      if (frame) frame.remove(); // aborts the old document if it is still loading
      // A fresh iframe each time: its first load adds no entry to the page's back history.
      var f = document.createElement('iframe');
      f.title = 'comet stream';
      f.hidden = true;
      f.src = '/sub/' + channels + '?transport=iframe&callback=cometIframe' +
        (since ? '&since=' + encodeURIComponent(since) : '');
      // 'load' fires when the document ends: the server closed it, or the request failed.
      f.addEventListener('load', function () {
        if (f !== frame) return; // an old iframe we already replaced
        kit.status('connecting', 'document ended, reopening');
        // Same origin, so an HTTP error body ({"error":{...}}) is readable here.
        var doc = f.contentDocument;
        var err = doc && doc.body && parseJSON(doc.body.textContent);
        if (err && err.error) {
          kit.note('iframe: ' + err.error.code + ': ' + err.error.message);
          if (err.error.code === 'bad_cursor') { lastIds = {}; cursor = null; }
        }
        setTimeout(function () {
          if (f === frame) open(cursor || position());
        }, retry);
        retry = Math.min(retry * 2, 5000); // back off while nothing arrives (a callback resets it)
      });
      frame = f;
      cursor = null;
      kit.status('connecting');
      meta.textContent = 'iframe #' + (++opened) + (since ? ' since ' + since : ' from the live edge');
      slot.appendChild(f);
    }

    function logLine(channel, id, data) {
      var li = el('li');
      li.appendChild(el('time', null, clock()));
      li.appendChild(el('span', 'chan', channel));
      li.appendChild(el('span', 'id', id));
      li.appendChild(el('code', null, clip(data, 80)));
      var nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      log.appendChild(li);
      while (log.children.length > 100) log.removeChild(log.firstChild);
      if (nearBottom) log.scrollTop = log.scrollHeight;
    }

    // Called by the iframe's scripts: parent.cometIframe(obj). Must be a global.
    window.cometIframe = function (obj) {
      if (!obj || typeof obj !== 'object') return;
      kit.wire('<script>p(' + JSON.stringify(obj) + ')</script>');
      retry = 1000;
      kit.status('open', 'streaming · iframe #' + opened);
      if (obj.type === 'reconnect') {
        // Budget spent: the document is about to end. Reopen from the server's position;
        // outside the iframe's own script, since we are about to remove that iframe.
        cursor = obj.cursor;
        var from = obj.cursor || position();
        setTimeout(function () { open(from); }, 0);
      } else if (obj.type === 'gap') {
        logLine(String(obj.channel), 'gap', 'history no longer reached our cursor');
        kit.note('gap on ' + obj.channel);
      } else if (typeof obj.channel === 'string' && typeof obj.id === 'string') {
        lastIds[obj.channel] = obj.id;
        logLine(obj.channel, obj.id, String(obj.data));
      }
    };

    // Start after the page's own load: an iframe that never finishes loading would otherwise
    // hold the window's load event (and the tab's spinner) forever.
    if (document.readyState === 'complete') open(null);
    else window.addEventListener('load', function () { open(null); });
  }

  // ---------------------------------------------------------------- footer: curl commands

  function curlFooter() {
    var base = location.protocol === 'https:' || location.protocol === 'http:'
      ? location.protocol + '//' + location.host : 'http://HOST';
    document.querySelectorAll('[data-cmd]').forEach(function (code) {
      code.textContent = code.getAttribute('data-cmd').split('{BASE}').join(base);
    });
  }

  curlFooter();
  progressByPolling();
  stockBySSE();
  chatByWebSocket();
  chatByXhrAndSSE();
  streamByIframe();
})();
