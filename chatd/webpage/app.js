// chatd's web page: one WebSocket to /ws, one JSON event per line of each message.
// Everything shown goes through textContent, never innerHTML: nobody's text is markup.
"use strict";

const log = document.getElementById("log");
const input = document.getElementById("input");
const statusLine = document.getElementById("status");
const roomName = document.getElementById("room");
const topicLine = document.getElementById("topic");

// The server asks for a registered alias's password with this notice.
const PASSWORD_PROMPT = / is registered\. Password:$/;

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

function show(text, kind, at) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const line = document.createElement("div");
  line.className = "line " + kind;
  if (at !== undefined) {
    const stamp = document.createElement("span");
    stamp.className = "time";
    stamp.textContent = "[" + new Date(at * 1000).toISOString().slice(0, 19).replace("T", " ") + "Z] ";
    line.appendChild(stamp);
  }
  line.appendChild(document.createTextNode(text));
  log.appendChild(line);
  while (log.childElementCount > 2000) log.removeChild(log.firstChild);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function setRoom(name, topic) {
  room = name;
  sessionStorage.setItem("chatd-room", name);
  roomName.textContent = name;
  topicLine.textContent = topic || "";
  document.title = name + " · chatd";
  if (alias) input.placeholder = "Message " + name + " as " + alias + " (/help for commands)";
}

const render = {
  message: (e) => show("<" + e.sender + "> " + e.text, "message"),
  action: (e) => show("* " + e.sender + " " + e.text, "action"),
  private: (e) => show("*" + e.sender + "* " + e.text, "private"),
  private_sent: (e) => show("-> *" + e.recipient + "* " + e.text, "private"),
  join: (e) => show(e.alias + " has joined " + e.room + " (" + e.present + " here)", "join"),
  leave: (e) => show(e.went_to ? e.alias + " has gone to " + e.went_to
                               : e.alias + " has left (" + e.reason + ")", "leave"),
  nick: (e) => {
    if (e.old === alias) {
      alias = e.new;
      sessionStorage.setItem("chatd-alias", alias);
    }
    show(e.old + " is now known as " + e.new, "nick");
  },
  room: (e) => {
    if (e.welcome) {
      welcomed = true;
      alias = e.welcome;
      sessionStorage.setItem("chatd-alias", alias);
    }
    setRoom(e.room, e.topic);
    const more = e.present > e.names.length ? ", …" : "";
    show("You are in " + e.room + " (" + e.present + "): " + e.names.join(", ") + more, "notice");
    if (e.welcome && rejoin && rejoin !== e.room) socket.send("/join " + rejoin);
    if (e.welcome) rejoin = null;
  },
  who: (e) => show((e.room ? "In " + e.room : "Online") + " (" + e.names.length + "): " + e.names.join(", "), "who"),
  rooms: (e) => e.rooms.forEach((r) => show(r.name + " (" + r.members + ")" + (r.topic ? ": " + r.topic : ""), "who")),
  topic: (e) => {
    topicLine.textContent = e.topic || "";
    show(e.alias + (e.topic ? " set the topic: " + e.topic : " cleared the topic"), "topic");
  },
  whois: (e) => show(e.alias + " is in " + e.room + ", online " + Math.round(e.online_seconds) + " s, idle "
                     + Math.round(e.idle_seconds) + " s" + (e.registered ? ", registered" : "")
                     + (e.away ? ", away: " + e.away : ""), "who"),
  history: (e) => {
    if (!e.entries.length) { show("No history in " + e.room + ".", "notice"); return; }
    show("History of " + e.room + ":", "notice");
    for (const h of e.entries) {
      show(h.kind === "act" ? "* " + h.alias + " " + h.text : "<" + h.alias + "> " + h.text, "history", h.at);
    }
    show("End of history.", "notice");
  },
  notice: (e) => {
    e.text.split("\n").forEach((t) => show(t, "notice"));
    if (!welcomed && PASSWORD_PROMPT.test(e.text)) askPassword(true);
  },
  error: (e) => show("!!! " + e.text, "error"),
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
      (render[event.type] || ((e) => show(JSON.stringify(e), "notice")))(event);
    }
  };
  socket.onclose = () => {
    statusLine.textContent = "disconnected; reconnecting…";
    statusLine.classList.add("down");
    retry = Math.min(retry + 1, 6);
    setTimeout(connect, 500 * 2 ** retry);
  };
}

document.getElementById("form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const text = input.value;
  if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
  const password = input.type === "password";
  socket.send(text);
  input.value = "";
  if (password) {  // never shown, never kept
    askPassword(false);
    return;
  }
  if (text.trim().toLowerCase() === "/quit" || text.toLowerCase().startsWith("/quit ")) {
    alias = null;
    sessionStorage.removeItem("chatd-alias");
  } else if (welcomed && (!text.startsWith("/") || text.startsWith("//"))) {
    show("<" + alias + "> " + (text.startsWith("//") ? text.slice(1) : text), "mine");
  }
});

connect();
