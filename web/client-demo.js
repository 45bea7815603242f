// Comet demo page, second half: the same panels as demo.js, written on comet.js (/comet.js,
// the global `Comet`), plus a transport inspector. Compare with demo.js: no cursors, no
// reconnect code, no per-transport parsing — the client does all of that, on any transport.
//
// All five panels share ONE client, hence one connection (a browser allows only six HTTP/1.1
// connections per host, and the raw panels above already hold three). The inspector picks that
// client's transport; on a switch, every panel resubscribes from its last cursor on the new
// client, so nothing is lost or shown twice.
//
// As in demo.js, message data is untrusted: it reaches the page only through textContent.
'use strict';

(function () {
  if (typeof Comet === 'undefined') return; // /comet.js did not load: the raw panels still work

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

  function parseJSON(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  // Appends li to list, keeps at most max items, and follows the bottom if the user was there.
  function append(list, li, max) {
    var nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.appendChild(li);
    while (list.children.length > max) list.removeChild(list.firstChild);
    if (nearBottom) list.scrollTop = list.scrollHeight;
  }

  // ---------------------------------------------------------------- one client for all panels

  var panels = [];     // each: {channels: [{name, since, onMessage}], kit}
  var subs = [];       // the current client's subscriptions
  var cursors = {};    // channel -> last cursor seen: the resume point when the client is replaced
  var client = null;

  function panel(id, channels) {
    var root = document.getElementById(id);
    var status = root.querySelector('.status');
    var note = root.querySelector('.note');
    var kit = {
      root: root,
      find: function (sel) { return root.querySelector(sel); },
      status: function (state, label) {
        status.setAttribute('data-state', state === 'open' ? 'open' : state === 'closed' ? 'error' : 'connecting');
        status.querySelector('.status-text').textContent = label || state;
      },
      note: function (text) {
        note.textContent = clock() + ' — ' + text;
        note.hidden = false;
      }
    };
    panels.push({ channels: channels, kit: kit });
    return kit;
  }

  // (Re)creates the client on `transports` and subscribes every panel, resuming each channel
  // from the last cursor it saw (or its own start, the first time).
  function start(transports) {
    if (client) client.close();
    subs = [];
    client = new Comet.Client(location.origin, transports ? { transports: transports } : {});
    inspector.attach(client);
    client.on('state', function (s) {
      // Once connected (and subscribed: a moment later), the members of the chats as they are
      // now; join and leave events keep them current.
      if (s.state === 'open') {
        var asked = client;
        setTimeout(function () {
          if (client !== asked) return;
          panels.forEach(function (p) {
            p.channels.forEach(function (c) {
              if (!c.members) return;
              c.members.load(client.presence(c.name));
            });
          });
        }, 500);
      }
      panels.forEach(function (p) {
        p.kit.status(s.state, s.state + (s.transport ? ' · ' + s.transport : ''));
        p.kit.find('.transport').textContent = 'comet.js · ' + (s.transport || '–');
      });
    });
    panels.forEach(function (p) {
      p.channels.forEach(function (c) {
        subs.push(client.subscribe(c.name, {
          since: cursors[c.name] || c.since,
          onMessage: function (msg) {
            cursors[msg.channel] = msg.id;
            c.onMessage(msg);
          },
          onGap: function (info) {
            p.kit.note('gap on ' + info.channel + ' (' + info.reason + '): some messages were missed');
          },
          onJoin: function (e) { if (c.members) c.members.join(e.client); },
          onLeave: function (e) { if (c.members) c.members.leave(e.client); }
        }));
      });
    });
  }

  // ---------------------------------------------------------------- transport inspector

  var inspector = (function () {
    var root = document.getElementById('c-inspector');
    var states = root.querySelector('.states');
    var frames = root.querySelector('.frames');
    var count = root.querySelector('.frame-count');
    var meta = root.querySelector('.inspector-meta');
    var status = root.querySelector('.status');
    var pick = root.querySelector('.pick');
    var n = 0;

    pick.addEventListener('change', function () {
      var li = el('li');
      li.appendChild(el('time', null, clock()));
      li.appendChild(el('span', null, '— switching to ' + pick.value + ', resuming from each channel\'s last cursor'));
      append(states, li, 200);
      start(pick.value === 'auto' ? null : [pick.value]);
    });

    return {
      attach: function (c) {
        c.on('state', function (s) {
          var li = el('li');
          li.appendChild(el('time', null, clock()));
          li.appendChild(el('b', 'st-' + s.state, s.state));
          var text = (s.transport || '') +
            (s.reason ? ' — ' + s.reason : '') +
            (s.delay !== undefined ? ' (retry in ' + s.delay + ' ms, attempt ' + s.attempt + ')' : '');
          li.appendChild(el('span', null, text));
          append(states, li, 200);
          status.setAttribute('data-state', s.state === 'open' ? 'open' : s.state === 'closed' ? 'error' : 'connecting');
          status.querySelector('.status-text').textContent = s.state + (s.transport ? ' · ' + s.transport : '');
          meta.textContent = 'client.state = ' + c.state + ', client.transportName = ' + c.transportName;
        });
        c.on('frame', function (f) {
          if (c !== client) return;
          var li = el('li');
          li.appendChild(el('time', null, clock(f.time)));
          li.appendChild(el('span', 'dir', (f.direction === 'in' ? '⇐ ' : '⇒ ') + f.transport));
          li.appendChild(el('code', null, clip(f.text, 400)));
          append(frames, li, 150);
          count.textContent = '(' + (++n) + ')';
        });
      }
    };
  })();

  // ---------------------------------------------------------------- the panels

  (function progress() {
    var kit = panel('c-poll', [{ name: 'demo:progress', onMessage: show }]);
    var fill = kit.find('.progress-fill');
    var bar = kit.find('.progress');
    var label = kit.find('.progress-label');
    var job = kit.find('.job');
    var meta = kit.find('.meta');
    function show(msg) {
      var p = parseJSON(msg.data);
      if (!p || typeof p.percent !== 'number') return;
      var pct = Math.max(0, Math.min(100, p.percent));
      fill.style.width = pct + '%';
      label.textContent = Math.round(pct) + '%';
      bar.setAttribute('aria-valuenow', String(Math.round(pct)));
      bar.classList.toggle('done', pct >= 100);
      job.textContent = p.job === undefined ? '–' : String(p.job);
      meta.textContent = 'message ' + msg.id + ' at ' + clock(msg.time);
    }
  })();

  (function stock() {
    var kit = panel('c-sse', [{ name: 'demo:stock', onMessage: show }]);
    var symbol = kit.find('.ticker-symbol');
    var price = kit.find('.ticker-price');
    var change = kit.find('.ticker-change');
    var line = kit.find('.sparkline polyline');
    var meta = kit.find('.meta');
    var prices = [];
    function show(msg) {
      var t = parseJSON(msg.data);
      if (!t || typeof t.price !== 'number') return;
      var ch = typeof t.change === 'number' ? t.change : 0;
      symbol.textContent = clip(t.symbol || '?', 12);
      price.textContent = t.price.toFixed(2);
      change.textContent = (ch > 0 ? '▲ +' : ch < 0 ? '▼ ' : '■ ') + ch.toFixed(2);
      change.setAttribute('data-dir', ch > 0 ? 'up' : ch < 0 ? 'down' : 'flat');
      prices.push(t.price);
      if (prices.length > 60) prices.shift();
      var lo = Math.min.apply(null, prices), hi = Math.max.apply(null, prices), span = hi - lo || 1;
      var step = 300 / 59;
      line.setAttribute('points', prices.map(function (v, i) {
        var x = (300 - (prices.length - 1) * step) + i * step;
        return x.toFixed(1) + ',' + (56 - ((v - lo) / span) * 52).toFixed(1);
      }).join(' '));
      meta.textContent = 'tick at ' + clock(t.time) + ' · id ' + msg.id;
    }
  })();

  // Who is online in a chat: the presence listing, then join and leave events (drawn as the
  // raw panels draw theirs, demo.js).
  var membersView = window.cometDemoMembersView;

  // A chat panel: the list is fed by a subscription, the form publishes with client.publish
  // (over the WebSocket when that is the open transport, else an HTTP POST).
  function chat(id, channel) {
    var sub = { name: channel, since: 'earliest', onMessage: add };
    var kit = panel(id, [sub]);
    sub.members = membersView(kit.find('.members'));
    var list = kit.find('.chat-list');
    var nick = kit.find('.nick-input');
    var input = kit.find('.chat-input');
    nick.value = 'guest-' + (100 + Math.floor(Math.random() * 900));
    kit.find('.chat-form').addEventListener('submit', function (e) {
      e.preventDefault();
      var text = input.value.trim();
      if (!text) return;
      client.publish(channel, JSON.stringify({ nick: nick.value.trim() || 'anonymous', text: text }))
        .then(function () { input.value = ''; })
        .catch(function (err) { kit.note('publish failed: ' + err.message); });
    });
    // No "seen" set here: the client delivers each message exactly once.
    function add(msg) {
      var m = parseJSON(msg.data);
      var who = m && typeof m.nick === 'string' ? m.nick : '?';
      var li = el('li');
      li.appendChild(el('time', null, clock(msg.time)));
      li.appendChild(el('b', who === nick.value.trim() ? 'me' : null, clip(who, 32)));
      li.appendChild(el('span', null, clip(m && typeof m.text === 'string' ? m.text : msg.data, 500)));
      li.title = 'id ' + msg.id;
      append(list, li, 200);
    }
  }
  chat('c-ws', 'demo:chat');
  chat('c-xhr-sse', 'demo:chat2');

  (function eventLog() {
    var kit;
    function line(msg) {
      var li = el('li');
      li.appendChild(el('time', null, clock(msg.time)));
      li.appendChild(el('span', 'chan', msg.channel));
      li.appendChild(el('span', 'id', msg.id));
      li.appendChild(el('code', null, clip(msg.data, 80)));
      append(kit.find('.event-log'), li, 100);
    }
    kit = panel('c-iframe', [{ name: 'demo:stock', onMessage: line }, { name: 'demo:progress', onMessage: line }]);
  })();

  start(null);
})();
