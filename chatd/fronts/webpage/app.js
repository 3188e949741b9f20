// chatd's web page: one WebSocket to /ws, one JSON event per line of each message.
// Everything from the server is text: it goes into the page through textContent and
// DOM nodes built here, never innerHTML. Links are <a> elements made here, for
// http(s) addresses only.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
const input = $("input");
const statusLine = $("status");
const roomName = $("room");
const topicLine = $("topic");
const roomsList = $("rooms");
const privatesList = $("privates");
const membersList = $("members");
const newerButton = $("newer");
const notifyButton = $("notify");

// The server asks for a registered alias's password with this notice.
const PASSWORD_PROMPT = / is registered\. Password:$/;
// How many lines the page keeps; older ones are dropped from the top.
const MAX_LINES = 2000;
// The room list is asked for again this often while someone uses the page...
const ROOMS_REFRESH_MS = 60_000;
// ... that is, while the tab is visible and they typed within this long. An
// abandoned tab sends nothing, so the server's idle timeout still applies to it.
const ACTIVE_MS = 10 * 60_000;
// Nick colours: a hash of the alias picks one of these classes (see style.css).
const NICK_COLOURS = 10;
const LINK = /\bhttps?:\/\/[^\s<>"'`]+/gi;

let socket = null;
// The alias and room of this tab, kept across reconnects (and reloads).
let alias = sessionStorage.getItem("chatd-alias");
let room = sessionStorage.getItem("chatd-room");
// Whether the server has welcomed us on this connection: until then, what is
// typed is an alias or a password, never chat.
let welcomed = false;
// The room to go back to once welcomed again after a reconnect.
let rejoin = null;
let retry = 0;
// Answers to /who and /rooms the page asked for itself, not yet arrived: they
// fill the member and room lists instead of being shown as chat lines.
let quiet = { who: 0, rooms: 0 };
// Who is in the current room (lower-cased alias -> alias), and the rooms in use.
const members = new Map();
let rooms = [];
let roomsAskedAt = 0;
// When the page last asked /who itself because a big room's summary of who came
// and went did not name everyone: at most once per WHO_AGAIN_MS, as in a room of
// thousands each such /who is a long answer, to every page there.
let whoAskedAt = 0;
const WHO_AGAIN_MS = 60000;
let typedAt = Date.now();
// Lines that came while nobody was looking (tab hidden, or the log scrolled up):
// chat in the current room, whether one of them named us, and private messages
// by sender (lower-cased alias -> {alias, unread}).
let unread = 0;
let mentioned = false;
const privates = new Map();
// Whether the log is scrolled to its newest line (and should stay there).
let stick = true;
let notifying = localStorage.getItem("chatd-notify") === "on"
  && "Notification" in window && Notification.permission === "granted";

// Text into nodes.

function nickClass(name) {
  let hash = 5381;
  for (const c of name.toLowerCase()) hash = (hash * 33 + c.codePointAt(0)) >>> 0;
  return "nick n" + (hash % NICK_COLOURS);
}

function nick(name) {
  const span = document.createElement("span");
  span.className = nickClass(name);
  span.textContent = name;
  return span;
}

// ``text`` as text nodes and links: only http and https addresses become links.
function linked(text) {
  const nodes = [];
  let last = 0;
  for (const found of text.matchAll(LINK)) {
    let candidate = found[0].replace(/[.,;:!?'"]+$/, "");
    while (candidate.endsWith(")") && candidate.split("(").length < candidate.split(")").length) {
      candidate = candidate.slice(0, -1);
    }
    let url;
    try {
      url = new URL(candidate);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    nodes.push(document.createTextNode(text.slice(last, found.index)));
    const a = document.createElement("a");
    a.href = url.href;
    a.textContent = candidate;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    nodes.push(a);
    last = found.index + candidate.length;
  }
  nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

function two(n) {
  return String(n).padStart(2, "0");
}

function stamp(at) {
  const when = at === undefined ? new Date() : new Date(at * 1000);
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = when.toISOString();
  time.title = when.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long", hourCycle: "h23" });
  time.textContent = two(when.getHours()) + ":" + two(when.getMinutes());
  return time;
}

// "3 h 5 min" for 11100 seconds: /whois times as people read them.
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
  if (s < 86400) {
    const minutes = Math.floor((s % 3600) / 60);
    return Math.floor(s / 3600) + " h" + (minutes ? " " + minutes + " min" : "");
  }
  const hours = Math.floor((s % 86400) / 3600);
  return Math.floor(s / 86400) + " d" + (hours ? " " + hours + " h" : "");
}

// The log.

function atBottom() {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

function toBottom() {
  log.scrollTop = log.scrollHeight;
  stick = true;
}

// Add a line of ``kind`` made of ``parts`` (strings are text, never markup).
function show(kind, parts, at) {
  const line = document.createElement("div");
  line.className = "line " + kind;
  line.append(stamp(at), " ", ...parts);
  log.appendChild(line);
  while (log.childElementCount > MAX_LINES) log.removeChild(log.firstChild);
  if (stick) toBottom();
  return line;
}

function say(kind, text) {
  return show(kind, [text]);
}

function looking() {
  return !document.hidden && stick;
}

// A line for us from someone else: counted and announced if nobody is looking.
// ``mention``: the server says it names us (chatd's one definition of a mention).
function arrived(line, from, text, isPrivate, mention) {
  const named = isPrivate || mention === true;
  if (mention === true) line.classList.add("mention");
  if (isPrivate) {
    const key = from.toLowerCase();
    const entry = privates.get(key) || { alias: from, unread: 0 };
    privates.delete(key);
    privates.set(key, entry);  // most recent last
  }
  if (looking()) {
    renderPrivates();
    return;
  }
  if (!unread && !privateUnread()) {
    for (const old of log.querySelectorAll(".divider")) old.remove();
    const divider = document.createElement("div");
    divider.className = "divider";
    divider.textContent = "new";
    line.before(divider);
  }
  if (isPrivate) privates.get(from.toLowerCase()).unread += 1;
  else unread += 1;
  if (named) mentioned = true;
  if (named && document.hidden) {
    notify(isPrivate ? "Private message from " + from : from + " in " + room, text);
  }
  renderUnread();
}

function privateUnread() {
  let count = 0;
  for (const entry of privates.values()) count += entry.unread;
  return count;
}

function markRead() {
  if (!looking() || (!unread && !mentioned && !privateUnread())) return;
  unread = 0;
  mentioned = false;
  for (const entry of privates.values()) entry.unread = 0;
  renderUnread();
}

function renderUnread() {
  const total = unread + privateUnread();
  document.title = (total ? "(" + total + (mentioned ? "@" : "") + ") " : "")
    + (room && welcomed ? room + " · chatd" : "chatd");
  newerButton.hidden = !unread || stick;
  newerButton.textContent = unread + " new line" + (unread === 1 ? "" : "s") + " below ↓";
  const badge = $("all-unread");
  badge.hidden = !total;
  badge.textContent = mentioned ? "@" : String(total);
  renderRooms();
  renderPrivates();
}

// The side panels.

function badge(text, title, mention) {
  const span = document.createElement("span");
  span.className = "badge" + (mention ? " mention-mark" : "");
  span.textContent = text;
  span.title = title;
  return span;
}

function renderRooms() {
  const shown = rooms.slice();
  if (room && welcomed && !shown.some((r) => r.name.toLowerCase() === room.toLowerCase())) {
    shown.push({ name: room, members: members.size, topic: topicLine.textContent });
  }
  const items = shown.map((r) => {
    const current = welcomed && room !== null && r.name.toLowerCase() === room.toLowerCase();
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room-button";
    button.title = r.topic ? r.name + ": " + r.topic : r.name;
    const name = document.createElement("span");
    name.className = "room-name";
    name.textContent = r.name;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = String(current ? members.size || r.members : r.members);
    button.append(name, count);
    if (current) {
      li.className = "current";
      button.setAttribute("aria-current", "true");
      if (mentioned) button.append(badge("@" + unread, unread + " unread; you were mentioned", true));
      else if (unread) button.append(badge(String(unread), unread + " unread", false));
    } else {
      button.addEventListener("click", () => {
        send("/join " + r.name);
        closePanels();
      });
    }
    li.appendChild(button);
    return li;
  });
  roomsList.replaceChildren(...items);
}

function renderPrivates() {
  $("private-title").hidden = !privates.size;
  const items = [...privates.values()].reverse().map((entry) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "private-button";
    button.title = "Write to " + entry.alias + " privately";
    button.append(nick(entry.alias));
    if (entry.unread) button.append(badge(String(entry.unread), entry.unread + " unread", true));
    button.addEventListener("click", () => {
      startLine("/msg " + entry.alias + " ");
      closePanels();
    });
    li.appendChild(button);
    return li;
  });
  privatesList.replaceChildren(...items);
}

function renderMembers() {
  const names = [...members.values()].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: "base" }));
  const items = names.map((name) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "member-button" + (name === alias ? " me" : "");
    button.title = name === alias ? "You" : "Write to " + name + " privately";
    button.appendChild(nick(name));
    if (name !== alias) {
      button.addEventListener("click", () => {
        startLine("/msg " + name + " ");
        closePanels();
      });
    }
    li.appendChild(button);
    return li;
  });
  membersList.replaceChildren(...items);
  $("member-count").textContent = String(members.size);
  $("members-here").textContent = room && welcomed ? "in " + room + " (" + members.size + ")" : "";
  renderRooms();
}

function setMembers(names) {
  members.clear();
  for (const name of names) members.set(name.toLowerCase(), name);
  renderMembers();
}

function startLine(text) {
  input.value = text;
  input.focus();
}

function closePanels() {
  document.body.classList.remove("rooms-open", "members-open");
  $("show-rooms").setAttribute("aria-expanded", "false");
  $("show-members").setAttribute("aria-expanded", "false");
}

function togglePanel(which) {
  const open = !document.body.classList.contains(which + "-open");
  closePanels();
  document.body.classList.toggle(which + "-open", open);
  $("show-" + which).setAttribute("aria-expanded", String(open));
  if (open && which === "rooms") askRooms();
}

function setRoom(name, topic) {
  room = name;
  sessionStorage.setItem("chatd-room", name);
  roomName.textContent = name;
  topicLine.textContent = topic || "";
  topicLine.title = topic || "";
  if (alias) input.placeholder = "Message " + name + " as " + alias + " (/help for commands)";
  unread = 0;
  mentioned = false;
  renderUnread();
}

// Nothing about a room is shown once we are in none (after /quit, or a lost connection).
function clearRoom() {
  roomName.textContent = "chatd";
  topicLine.textContent = "";
  topicLine.title = "";
  rooms = [];
  setMembers([]);
  renderUnread();
}

// The server.

function send(text) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(text);
}

// Ask for /who or /rooms without showing the answer: it fills a list.
function quietly(command) {
  if (!welcomed || !socket || socket.readyState !== WebSocket.OPEN) return;
  quiet[command.slice(1)] += 1;
  socket.send(command);
}

function askRooms() {
  roomsAskedAt = Date.now();
  quietly("/rooms");
}

function notify(title, body) {
  if (!notifying) return;
  try {
    const note = new Notification(title, { body: body, tag: "chatd" });
    note.onclick = () => {
      window.focus();
      note.close();
    };
  } catch {
    // Some browsers allow notifications only from a service worker: none then.
  }
}

function isCurrent(name) {
  return room !== null && name.toLowerCase() === room.toLowerCase();
}

function moveCount(name, delta) {
  const entry = rooms.find((r) => r.name.toLowerCase() === name.toLowerCase());
  if (entry) entry.members = Math.max(0, entry.members + delta);
  else if (delta > 0) rooms.push({ name: name, members: delta, topic: null });
  rooms = rooms.filter((r) => r.members > 0 || isCurrent(r.name));
}

const render = {
  message: (e) => arrived(show("message", ["<", nick(e.sender), "> ", ...linked(e.text)]), e.sender, e.text, false, e.mention),
  action: (e) => arrived(show("action", ["* ", nick(e.sender), " ", ...linked(e.text)]), e.sender, e.text, false, e.mention),
  private: (e) => arrived(show("private", ["*", nick(e.sender), "* ", ...linked(e.text)]), e.sender, e.text, true, false),
  private_sent: (e) => {
    show("private", ["-> *", nick(e.recipient), "* ", ...linked(e.text)]);
    const key = e.recipient.toLowerCase();
    const entry = privates.get(key) || { alias: e.recipient, unread: 0 };
    privates.delete(key);
    privates.set(key, entry);
    renderPrivates();
  },
  join: (e) => {
    show("join", [nick(e.alias), " has joined " + e.room + " (" + e.present + " here)"]);
    if (isCurrent(e.room)) members.set(e.alias.toLowerCase(), e.alias);
    if (e.came_from) moveCount(e.came_from, -1);
    renderMembers();
  },
  leave: (e) => {
    show("leave", [nick(e.alias), e.went_to ? " has gone to " + e.went_to : " has left (" + e.reason + ")"]);
    members.delete(e.alias.toLowerCase());
    if (e.went_to) moveCount(e.went_to, 1);
    renderMembers();
  },
  comings: (e) => {  // a big room sums up who came and went (see docs/protocol.md)
    const named = (names, count) =>
      names.join(", ") + (count > names.length ? " and " + (count - names.length) + " more" : "");
    const counts = [];
    const lists = [];
    if (e.joined) {
      counts.push(e.joined + " joined");
      lists.push(named(e.joined_names, e.joined) + (e.left ? " joined" : ""));
    }
    if (e.left) {
      counts.push(e.left + " left");
      lists.push(named(e.left_names, e.left) + (e.joined ? " left" : ""));
    }
    say("join", counts.join(", ") + " in the last " + e.seconds + " s: " + lists.join("; ") + " (" + e.present + " here)");
    if (!isCurrent(e.room)) return;
    for (const name of e.left_names) members.delete(name.toLowerCase());
    for (const name of e.joined_names) members.set(name.toLowerCase(), name);
    if (members.size !== e.present && Date.now() - whoAskedAt > WHO_AGAIN_MS) {
      whoAskedAt = Date.now();
      quietly("/who");
    }
    renderMembers();
  },
  nick: (e) => {
    if (e.old === alias) {
      alias = e.new;
      sessionStorage.setItem("chatd-alias", alias);
      if (room) input.placeholder = "Message " + room + " as " + alias + " (/help for commands)";
    }
    show("rename", [nick(e.old), " is now known as ", nick(e.new)]);
    if (members.delete(e.old.toLowerCase())) members.set(e.new.toLowerCase(), e.new);
    const talk = privates.get(e.old.toLowerCase());
    if (talk) {
      privates.delete(e.old.toLowerCase());
      talk.alias = e.new;
      privates.set(e.new.toLowerCase(), talk);
    }
    renderMembers();
    renderPrivates();
  },
  room: (e) => {
    if (e.welcome) {
      welcomed = true;
      alias = e.welcome;
      sessionStorage.setItem("chatd-alias", alias);
    }
    setRoom(e.room, e.topic);
    setMembers(e.names);
    const more = e.present > e.names.length ? ", …" : "";
    say("notice", "You are in " + e.room + " (" + e.present + "): " + e.names.join(", ") + more);
    if (e.welcome && rejoin && rejoin !== e.room) {
      send("/join " + rejoin);
    } else {
      if (e.present > e.names.length) quietly("/who");
      askRooms();
    }
    if (e.welcome) rejoin = null;
  },
  who: (e) => {
    const asked = quiet.who > 0 && e.room !== null;
    if (asked) quiet.who -= 1;
    if (e.room !== null && isCurrent(e.room)) setMembers(e.names);
    if (!asked) say("who", (e.room ? "In " + e.room : "Online") + " (" + e.names.length + "): " + e.names.join(", "));
  },
  rooms: (e) => {
    rooms = e.rooms.slice();
    renderRooms();
    if (quiet.rooms > 0) {
      quiet.rooms -= 1;
      return;
    }
    e.rooms.forEach((r) => say("who", r.name + " (" + r.members + ")" + (r.topic ? ": " + r.topic : "")));
    if (e.more) say("who", "and " + e.more + " smaller room" + (e.more === 1 ? "" : "s") + " not listed");
  },
  topic: (e) => {
    topicLine.textContent = e.topic || "";
    topicLine.title = e.topic || "";
    show("topic", [nick(e.alias), ...(e.topic ? [" set the topic: ", ...linked(e.topic)] : [" cleared the topic"])]);
  },
  whois: (e) => show("who", [
    nick(e.alias), " is in " + e.room + ", online " + duration(e.online_seconds)
      + ", idle " + duration(e.idle_seconds) + (e.registered ? ", registered" : "")
      + (e.away ? ", away: " + e.away : ""),
  ]),
  history: (e) => {
    if (!e.entries.length) {
      say("notice", "No history in " + e.room + ".");
      return;
    }
    say("notice", "History of " + e.room + ":");
    for (const h of e.entries) {
      const parts = h.kind === "act" ? ["* ", nick(h.alias), " "] : ["<", nick(h.alias), "> "];
      const line = show("history", [...parts, ...linked(h.text)], h.at);
      if (h.mention === true) line.classList.add("mention");
    }
    say("notice", "End of history.");
  },
  notice: (e) => {
    e.text.split("\n").forEach((t) => show("notice", linked(t)));
    if (!welcomed && PASSWORD_PROMPT.test(e.text)) askPassword(true);
  },
  error: (e) => say("error", "!!! " + e.text),
  // A private message left while this user was offline, with the time it was sent.
  offline_message: (e) =>
    arrived(show("private", ["*", nick(e.sender), "* ", ...linked(e.text)], e.at), e.sender, e.text, true),
  mentions: (e) => {
    if (!e.entries.length) {
      say("notice", "No lines mentioned you while you were away.");
      return;
    }
    say("notice", "Lines that mentioned you while you were away (" + e.entries.length + "):");
    for (const m of e.entries) {
      const parts = m.kind === "act" ? ["* ", nick(m.alias), " "] : ["<", nick(m.alias), "> "];
      show("history", [m.room + " ", ...parts, ...linked(m.text)], m.at).classList.add("mention");
    }
    say("notice", "End of mentions ('/mentions clear' forgets them).");
  },
};

function askPassword(asking) {
  input.type = asking ? "password" : "text";
  input.autocomplete = asking ? "current-password" : "off";
  input.placeholder = asking ? "Password" : (welcomed ? input.placeholder : "Choose an alias");
  input.focus();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/ws");
  statusLine.textContent = "connecting…";
  statusLine.classList.remove("down");
  welcomed = false;
  quiet = { who: 0, rooms: 0 };
  askPassword(false);
  socket.onopen = () => {
    retry = 0;
    statusLine.textContent = "connected";
    if (alias !== null) {  // back after a drop: the same alias, then (once welcomed) the same room
      rejoin = room;
      socket.send(alias);
    }
  };
  socket.onmessage = (message) => {
    for (const text of message.data.split("\n")) {
      if (!text) continue;
      const event = JSON.parse(text);
      (render[event.type] || ((e) => say("notice", JSON.stringify(e))))(event);
    }
  };
  socket.onclose = () => {
    welcomed = false;
    clearRoom();
    statusLine.textContent = "disconnected; reconnecting…";
    statusLine.classList.add("down");
    retry = Math.min(retry + 1, 6);
    setTimeout(connect, 500 * 2 ** retry);
  };
}

// What the user does.

$("form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const text = input.value;
  if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
  const password = input.type === "password";
  socket.send(text);
  input.value = "";
  typedAt = Date.now();
  toBottom();
  if (password) {  // never shown, never kept
    askPassword(false);
    return;
  }
  const lower = text.trim().toLowerCase();
  if (lower === "/quit" || lower.startsWith("/quit ")) {
    alias = null;
    room = null;
    welcomed = false;
    sessionStorage.removeItem("chatd-alias");
    sessionStorage.removeItem("chatd-room");
    clearRoom();
  } else if (welcomed && lower.startsWith("/me ") && text.slice(4).trim()) {
    show("action mine", ["* ", nick(alias), " ", ...linked(text.slice(4))]);
  } else if (welcomed && (!text.startsWith("/") || text.startsWith("//"))) {
    show("message mine", ["<", nick(alias), "> ", ...linked(text.startsWith("//") ? text.slice(1) : text)]);
  }
});

$("join-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const joinInput = $("join-input");
  let name = joinInput.value.trim();
  if (!name) return;
  if (!name.startsWith("#")) name = "#" + name;
  send("/join " + name);
  joinInput.value = "";
  typedAt = Date.now();
  closePanels();
});

$("show-rooms").addEventListener("click", () => togglePanel("rooms"));
$("show-members").addEventListener("click", () => togglePanel("members"));
log.addEventListener("click", closePanels);
newerButton.addEventListener("click", () => {
  toBottom();
  markRead();
  renderUnread();
});

function renderNotify() {
  notifyButton.setAttribute("aria-pressed", String(notifying));
  notifyButton.title = "Desktop notifications for mentions and private messages while this tab is hidden: "
    + (notifying ? "on" : "off");
}

notifyButton.addEventListener("click", () => {
  if (notifying) {
    notifying = false;
    localStorage.setItem("chatd-notify", "off");
    renderNotify();
    return;
  }
  if (!("Notification" in window)) {
    say("error", "!!! This browser shows no desktop notifications here (they need https or localhost).");
    return;
  }
  Notification.requestPermission().then((permission) => {
    notifying = permission === "granted";
    localStorage.setItem("chatd-notify", notifying ? "on" : "off");
    renderNotify();
    say("notice", notifying
      ? "Desktop notifications on: mentions and private messages, while this tab is hidden."
      : "Desktop notifications are not allowed by this browser for this page.");
  });
});

log.addEventListener("scroll", () => {
  stick = atBottom();
  markRead();
  newerButton.hidden = !unread || stick;
});

document.addEventListener("visibilitychange", () => {
  markRead();
  if (!document.hidden && Date.now() - roomsAskedAt > ROOMS_REFRESH_MS) askRooms();
});

// Whatever changes the log's size (a phone's keyboard, a rotated screen, a
// panel), the newest line stays in view if it was.
new ResizeObserver(() => {
  if (stick) toBottom();
}).observe(log);

function fitViewport() {
  const viewport = window.visualViewport;
  if (Math.abs(viewport.scale - 1) > 0.01) return;  // pinch-zoomed: the layout stays as it is
  document.documentElement.style.setProperty("--page-height", viewport.height + "px");
  window.scrollTo(0, 0);
  if (stick) toBottom();
}

if (window.visualViewport) {
  window.visualViewport.addEventListener("resize", fitViewport);
  fitViewport();
}
input.addEventListener("focus", () => {
  if (stick) setTimeout(toBottom, 300);  // after the phone's keyboard is up
});

setInterval(() => {
  if (!document.hidden && Date.now() - typedAt < ACTIVE_MS) askRooms();
}, ROOMS_REFRESH_MS);

renderNotify();
renderUnread();
connect();
