/*
 * loadgen: the load generator of chatd's benchmark (bench/run.py builds and drives it).
 *
 * Why C: a Python client that parses every line it receives needs about as much CPU
 * per delivery as the server under test, so it would saturate its own core first. This
 * program is one single-threaded epoll loop; a received line costs a memchr and a
 * couple of byte compares, and only the messages it sent itself are parsed further.
 *
 * Every message this program sends ends in a fixed-format tail,
 *
 *     ~K0123456789abcdef~        K = M (measured), S (sync barrier), B (broadcast)
 *
 * whose 16 hex digits are CLOCK_MONOTONIC nanoseconds when the message was generated
 * (or a sync id). Whatever prefix a server puts in front of the text (`<alias> ` for
 * chatd, `:nick!user@host PRIVMSG #bench :` for IRC), the tail sits right before the
 * line end, so deliveries are recognised and timed without knowing the server.
 *
 * Modes (one run = one measurement, the result is one JSON object on stdout):
 *   fanout  N clients join one room, S of them send open-loop at a total rate R for D s;
 *           counts deliveries, latency histogram, server and own CPU over the window.
 *   idle    N clients join and stay idle; server RSS before/after, then the time one
 *           broadcast line takes to reach all of them.
 *   churn   sessions of connect, alias, one line, quit, wait for close, with C in flight.
 *
 * Protocols: chatd (README's line protocol), ref (bench/reference_server.py: first line is
 * the alias, no replies), irc (NICK/USER, JOIN #bench, PRIVMSG #bench).
 *
 * It only ever connects to the host given (run.py passes 127.0.0.1), from 127.0.0.1 to
 * 127.0.0.N with --source-addrs N (for more connections than one source address has
 * ephemeral ports: run.py passes it for over 20,000 idle users). --port may list
 * several ports (the nodes of a chatd cluster, bench/cluster.py): client i connects to
 * port i % count, so the senders (clients 0 to S-1) are split the same way. Each
 * delivery is then also counted per port, and timed apart by whether it crossed from a
 * sender on another port. --server-pid may list several processes too; each one's CPU
 * over the send window is reported.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum proto { P_CHATD, P_REF, P_IRC };
enum mode { M_FANOUT, M_IDLE, M_CHURN };
enum state {
	ST_FREE,
	ST_CONNECTING,  /* non-blocking connect in progress */
	ST_GREETING,    /* chatd: waiting for the alias prompt */
	ST_REGISTERING, /* chatd: alias sent; irc: NICK/USER sent */
	ST_JOINING,     /* irc: JOIN sent, waiting for end of NAMES */
	ST_READY,       /* in the room */
	ST_QUITTING,    /* quit sent, waiting for the server to close */
};

#define TAIL_LEN 19
#define READ_BUF_BYTES (64 * 1024)
#define OUT_CAP_BYTES (4 * 1024 * 1024)
#define MAX_EVENTS 1024
#define MIN_SLEEP_NS 200000ull
#define COALESCE_NS 1000000ull
#define COALESCE_READY 64
#define HIST_SUB 64
#define HIST_BUCKETS (60 * HIST_SUB)
#define MAX_PORTS 16
#define MAX_PIDS 16

typedef struct conn {
	int fd;
	int idx;
	int state;
	int sender;
	int oper_ok;
	char alias[32];
	char *carry;
	size_t clen, ccap;
	char *out;
	size_t olen, ooff, ocap;
	int want_out;
	int dirty;
	uint32_t sync_seen;
	uint64_t t_start;
	uint64_t delivered;
	int got_bcast;
} conn_t;

typedef struct {
	uint64_t counts[HIST_BUCKETS];
	uint64_t n, max;
} hist_t;

/* Options. */
static int o_mode = M_FANOUT, o_proto = P_CHATD;
static const char *o_host = "127.0.0.1";
static int o_ports[MAX_PORTS], o_nports;
static int o_clients = 200, o_senders = 20, o_concurrency = 50, o_msg_bytes = 64;
static double o_rate = 100, o_duration = 5, o_drain = 5, o_timeout = 120, o_settle = 0.5;
static int o_server_pid; /* the first of o_pids: RSS, and CPU in idle and churn mode */
static int o_pids[MAX_PIDS], o_npids;
static const char *o_prefix = "u";
static const char *o_oper;  /* irc: "name:password" for the senders' OPER, then MODE +F */
static int o_progress;
static int o_source_addrs; /* >0: client i binds to 127.0.0.(1 + i % N) before connecting */

/* State. */
static int ep;
static conn_t *conns;
static int nconns;
static char *rbuf;
static uint64_t t_origin;
static hist_t lat;       /* fan-out delivery latency, microseconds */
static hist_t sess;      /* churn session time, microseconds */
static hist_t bcast;     /* idle broadcast arrival, microseconds */
static hist_t lat_local; /* several ports: sender and receiver on the same one */
static hist_t lat_cross; /* several ports: sender on another port */
static uint64_t port_delivered[MAX_PORTS];
static uint64_t delivered, other_lines, disconnects, connect_failures, refusals;
static uint64_t ready_count, pending_count, opers_ok;
static uint64_t bytes_in;
static uint32_t sync_id;
static uint64_t run_tag;         /* in every sync line, so replayed old ones are ignored */
static uint64_t measure_from_ns = UINT64_MAX; /* earlier measured messages: not ours */
static uint64_t bcast_sent_ns, bcast_got;
static uint64_t chunk_ns; /* when the chunk being parsed was read */
static char first_error[256];
static char payload_fill[4096];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_self_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void note_error(const char *fmt, ...)
{
	va_list ap;
	if (first_error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(first_error, sizeof first_error, fmt, ap);
	va_end(ap);
	for (char *p = first_error; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 32)
			*p = '\'';
}

static void progress(const char *fmt, ...)
{
	va_list ap;
	if (!o_progress)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "loadgen: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* /proc readers for the server process: CPU seconds (utime+stime) and VmRSS in KiB. */
static double proc_cpu_s(int pid)
{
	char path[64], buf[4096];
	unsigned long long ut = 0, st = 0;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* After ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt(13) utime(14) stime(15). */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU time of every thread of ``pid`` in nanoseconds, from /proc/PID/task/TID/schedstat
 * (the kernel's own count, not clock ticks: a short step at a low rate uses a few
 * milliseconds). Falls back to utime+stime where schedstat is missing. */
static double proc_cpu_ns(int pid)
{
	char path[64], line[128];
	double total = 0;
	int found = 0;
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char tpath[300];
		unsigned long long ns;
		snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/schedstat", pid, e->d_name);
		FILE *f = fopen(tpath, "r");
		if (!f)
			continue;
		if (fgets(line, sizeof line, f) && sscanf(line, "%llu", &ns) == 1) {
			total += (double)ns;
			found = 1;
		}
		fclose(f);
	}
	closedir(d);
	if (!found) {
		double s = proc_cpu_s(pid);
		return s < 0 ? -1 : s * 1e9;
	}
	return total;
}

/* "5001,5002" into out[]; the count, or -1 if an item is not a positive number. */
static int parse_int_list(const char *text, int *out, int cap)
{
	int n = 0;
	const char *p = text;
	for (;;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || v <= 0 || v > 0x7fffffff || n == cap)
			return -1;
		out[n++] = (int)v;
		if (*end == 0)
			return n;
		if (*end != ',')
			return -1;
		p = end + 1;
	}
}

static long proc_rss_kib(int pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Histogram: exact below 64 us, then 64 sub-buckets per power of two (~1.6 %). */
static void hist_add(hist_t *h, uint64_t v)
{
	int i;
	if (v < HIST_SUB) {
		i = (int)v;
	} else {
		int e = 63 - __builtin_clzll(v);
		int shift = e - 6;
		i = (shift + 1) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
		if (i >= HIST_BUCKETS)
			i = HIST_BUCKETS - 1;
	}
	h->counts[i]++;
	h->n++;
	if (v > h->max)
		h->max = v;
}

static double hist_value(int i)
{
	if (i < HIST_SUB)
		return i;
	int shift = i / HIST_SUB - 1;
	double top = (double)(i % HIST_SUB + HIST_SUB);
	return (top + 0.5) * (double)(1ull << shift);
}

static double hist_pct(const hist_t *h, double q)
{
	if (!h->n)
		return -1;
	uint64_t want = (uint64_t)(q * (double)h->n);
	if (want >= h->n)
		want = h->n - 1;
	uint64_t seen = 0;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen > want) {
			double v = hist_value(i);
			return v > (double)h->max ? (double)h->max : v;
		}
	}
	return (double)h->max;
}

/* Output buffering: data waits here while the socket is full. */
static void out_append(conn_t *c, const char *data, size_t len)
{
	if (c->olen + len > c->ocap) {
		if (c->ooff) {
			memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
			c->olen -= c->ooff;
			c->ooff = 0;
		}
		if (c->olen + len > c->ocap) {
			size_t cap = c->ocap ? c->ocap : 1024;
			while (cap < c->olen + len)
				cap *= 2;
			c->out = realloc(c->out, cap);
			if (!c->out) {
				perror("realloc");
				exit(2);
			}
			c->ocap = cap;
		}
	}
	memcpy(c->out + c->olen, data, len);
	c->olen += len;
}

static void set_events(conn_t *c, int want_out)
{
	struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
	if (c->want_out != want_out) {
		epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = want_out;
	}
}

static void conn_lost(conn_t *c, const char *why);

static void flush(conn_t *c)
{
	while (c->ooff < c->olen) {
		ssize_t n = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
		if (n > 0) {
			c->ooff += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			set_events(c, 1);
			return;
		}
		if (n < 0 && errno == EINTR)
			continue;
		conn_lost(c, strerror(errno));
		return;
	}
	c->ooff = c->olen = 0;
	if (c->want_out)
		set_events(c, 0);
}

static void sendf(conn_t *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	out_append(c, buf, (size_t)n);
	flush(c);
}

static size_t pending_out(const conn_t *c)
{
	return c->olen - c->ooff;
}

/* Builds one chat message (the text the server relays) ending in the timed tail. */
static size_t build_text(char *dst, char kind, uint64_t value)
{
	size_t fill = (size_t)o_msg_bytes - TAIL_LEN;
	memcpy(dst, payload_fill, fill);
	char *t = dst + fill;
	t[0] = '~';
	t[1] = kind;
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++)
		t[2 + i] = hex[(value >> (60 - 4 * i)) & 0xf];
	t[18] = '~';
	return (size_t)o_msg_bytes;
}

static void send_chat(conn_t *c, char kind, uint64_t value)
{
	char buf[4200];
	size_t n = 0;
	if (o_proto == P_IRC) {
		memcpy(buf, "PRIVMSG #bench :", 16);
		n = 16;
	}
	n += build_text(buf + n, kind, value);
	/* Several ports: the byte before the tail says which one the sender is on. */
	if (o_nports > 1)
		buf[n - TAIL_LEN - 1] = (char)('A' + c->idx % o_nports);
	if (o_proto == P_IRC)
		buf[n++] = '\r';
	buf[n++] = '\n';
	out_append(c, buf, n);
}

/* Eight lowercase hex digits to a number without a loop or a branch per digit: this
 * runs once per delivery, millions of times a second. */
static inline uint64_t parse_hex8(const char *p)
{
	uint64_t x;
	memcpy(&x, p, 8);
	/* '0'..'9' are 0x30..0x39, 'a'..'f' 0x61..0x66: bit 6 tells letters apart. */
	x = (x & 0x0f0f0f0f0f0f0f0full) + ((x & 0x4040404040404040ull) >> 6) * 9;
	/* The first digit is the lowest byte (little-endian) and the most significant. */
	x = ((x & 0x0f000f000f000f00ull) >> 8) | ((x & 0x000f000f000f000full) << 4);
	x = ((x & 0x00ff000000ff0000ull) >> 16) | ((x & 0x000000ff000000ffull) << 8);
	x = ((x & 0x0000ffff00000000ull) >> 32) | ((x & 0x000000000000ffffull) << 16);
	return x & 0xffffffffull;
}

static uint64_t parse_hex16(const char *p)
{
	return parse_hex8(p) << 32 | parse_hex8(p + 8);
}

/* Protocol events ------------------------------------------------------------------ */

static void became_ready(conn_t *c);

static void on_connected(conn_t *c)
{
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	switch (o_proto) {
	case P_CHATD:
		c->state = ST_GREETING;
		break;
	case P_REF:
		sendf(c, "%s\n", c->alias);
		became_ready(c);
		break;
	case P_IRC:
		c->state = ST_REGISTERING;
		sendf(c, "NICK %s\r\nUSER %s 0 * :bench\r\n", c->alias, c->alias);
		break;
	}
}

static void handle_sync(conn_t *c, uint32_t id);

static int starts(const char *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	return n >= l && memcmp(p, lit, l) == 0;
}

/* " NNN " as the second word of an IRC line (the numeric reply code). */
static int irc_numeric(const char *p, size_t n, const char *code)
{
	const char *sp = memchr(p, ' ', n);
	if (!sp || (size_t)(sp - p) + 5 > n)
		return 0;
	return memcmp(sp + 1, code, 3) == 0 && sp[4] == ' ';
}

static void on_line(conn_t *c, const char *p, size_t n)
{
	if (n && p[n - 1] == '\r')
		n--;
	/* Fast path: one of our own messages, recognised by its tail. */
	if (n >= TAIL_LEN && p[n - 1] == '~' && p[n - TAIL_LEN] == '~') {
		char kind = p[n - TAIL_LEN + 1];
		uint64_t v = parse_hex16(p + n - TAIL_LEN + 2);
		/* A server may replay earlier lines (room history) to a newcomer: only
		 * messages of this run count, told apart by time and by the run's tag. */
		if (kind == 'M' && v >= measure_from_ns) {
			uint64_t t = chunk_ns;
			uint64_t us = t > v ? (t - v) / 1000 : 0;
			delivered++;
			c->delivered++;
			hist_add(&lat, us);
			if (o_nports > 1 && n > TAIL_LEN) {
				int port = c->idx % o_nports;
				port_delivered[port]++;
				hist_add(p[n - TAIL_LEN - 1] - 'A' == port ? &lat_local : &lat_cross, us);
			}
			return;
		}
		if (kind == 'S' && (v >> 32) == run_tag) {
			handle_sync(c, (uint32_t)v);
			return;
		}
		if (kind == 'B' && v == bcast_sent_ns) {
			uint64_t t = chunk_ns;
			if (!c->got_bcast) {
				c->got_bcast = 1;
				bcast_got++;
				hist_add(&bcast, (t - v) / 1000);
			}
			return;
		}
	}
	other_lines++;
	switch (o_proto) {
	case P_CHATD:
		if (c->state == ST_GREETING && starts(p, n, "*** Choose an alias")) {
			c->state = ST_REGISTERING;
			sendf(c, "%s\n", c->alias);
		} else if (c->state == ST_REGISTERING && starts(p, n, "*** Type /help")) {
			became_ready(c);
		} else if (c->state == ST_REGISTERING && starts(p, n, "!!! ")) {
			refusals++;
			note_error("chatd refused alias %s: %.*s", c->alias, (int)(n > 120 ? 120 : n), p);
		}
		break;
	case P_REF:
		break;
	case P_IRC:
		if (starts(p, n, "PING ")) {
			char buf[600];
			int len = snprintf(buf, sizeof buf, "PONG %.*s\r\n", (int)(n - 5 > 500 ? 500 : n - 5), p + 5);
			out_append(c, buf, (size_t)len);
			flush(c);
		} else if (starts(p, n, "ERROR ") && c->state != ST_QUITTING) {
			note_error("irc server closed %s: %.*s", c->alias, (int)(n > 120 ? 120 : n), p);
		} else if (c->state == ST_REGISTERING && irc_numeric(p, n, "001")) {
			c->state = ST_JOINING;
			if (c->sender && o_oper) {
				const char *colon = strchr(o_oper, ':');
				sendf(c, "OPER %.*s %s\r\nMODE %s +F\r\n", (int)(colon - o_oper), o_oper,
				      colon + 1, c->alias);
			}
			sendf(c, "JOIN #bench\r\n");
		} else if (irc_numeric(p, n, "381")) {
			c->oper_ok = 1;
			opers_ok++;
		} else if (c->state == ST_JOINING && irc_numeric(p, n, "366")) {
			became_ready(c);
		} else if (c->state == ST_REGISTERING && (irc_numeric(p, n, "433") ||
							  irc_numeric(p, n, "432"))) {
			refusals++;
			note_error("irc refused nick %s: %.*s", c->alias, (int)(n > 120 ? 120 : n), p);
		}
		break;
	}
}

static void on_data(conn_t *c, char *data, size_t len)
{
	char *p = data, *end = data + len;
	if (c->clen) {
		char *nl = memchr(p, '\n', len);
		if (!nl) {
			/* A line longer than this read: keep it whole until its end comes. */
			if (c->clen + len > c->ccap) {
				size_t cap = c->ccap ? c->ccap : 256;
				while (cap < c->clen + len)
					cap *= 2;
				c->carry = realloc(c->carry, cap);
				c->ccap = cap;
			}
			memcpy(c->carry + c->clen, p, len);
			c->clen += len;
			return;
		}
		size_t part = (size_t)(nl - p);
		if (c->clen + part > c->ccap) {
			size_t cap = c->ccap ? c->ccap : 256;
			while (cap < c->clen + part)
				cap *= 2;
			c->carry = realloc(c->carry, cap);
			c->ccap = cap;
		}
		memcpy(c->carry + c->clen, p, part);
		size_t full = c->clen + part;
		c->clen = 0;
		on_line(c, c->carry, full);
		if (c->ccap > 8192) {
			free(c->carry);
			c->carry = NULL;
			c->ccap = 0;
		}
		if (c->state == ST_FREE)
			return;
		p = nl + 1;
	}
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break;
		on_line(c, p, (size_t)(nl - p));
		if (c->state == ST_FREE)
			return;
		p = nl + 1;
	}
	if (p < end) {
		size_t rest = (size_t)(end - p);
		if (rest > c->ccap) {
			size_t cap = 256;
			while (cap < rest)
				cap *= 2;
			c->carry = realloc(c->carry, cap);
			c->ccap = cap;
		}
		memcpy(c->carry, p, rest);
		c->clen = rest;
	}
}

/* Connections ---------------------------------------------------------------------- */

static struct sockaddr_in server_addrs[MAX_PORTS]; /* client i connects to i % o_nports */

static void conn_close(conn_t *c)
{
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = ST_FREE;
	c->clen = 0;
	c->olen = c->ooff = 0;
	c->want_out = 0;
	c->dirty = 0;
	free(c->carry);
	c->carry = NULL;
	c->ccap = 0;
}

/* One source address gives the kernel ~28,000 ephemeral ports (ip_local_port_range)
 * to reach one server port with; past that, connect() fails with EADDRNOTAVAIL. The
 * whole of 127.0.0.0/8 is loopback, so client i connects from 127.0.0.(1 + i % N):
 * N times the connections. IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), which
 * then picks it for the whole address pair instead of reserving one at bind(). */
static int bind_source(int fd, int idx)
{
	int one = 1;
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	struct sockaddr_in src = {.sin_family = AF_INET};
	src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(idx % o_source_addrs));
	if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
		note_error("bind 127.0.0.%d: %s", 1 + idx % o_source_addrs, strerror(errno));
		return -1;
	}
	return 0;
}

static int conn_open(conn_t *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		note_error("socket: %s", strerror(errno));
		return -1;
	}
	c->fd = fd;
	c->state = ST_CONNECTING;
	c->want_out = 1;
	c->t_start = now_ns();
	c->sync_seen = 0;
	c->delivered = 0;
	c->got_bcast = 0;
	c->oper_ok = 0;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	struct sockaddr_in *addr = &server_addrs[c->idx % o_nports];
	if (o_source_addrs > 0 && bind_source(fd, c->idx) < 0) {
		close(fd);
		c->fd = -1;
		c->state = ST_FREE;
		return -1;
	}
	if (connect(fd, (struct sockaddr *)addr, sizeof *addr) < 0 &&
	    errno != EINPROGRESS) {
		note_error("connect: %s", strerror(errno));
		close(fd);
		c->fd = -1;
		c->state = ST_FREE;
		return -1;
	}
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	pending_count++;
	return 0;
}

static void connect_done(conn_t *c)
{
	int err = 0;
	socklen_t len = sizeof err;
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err) {
		connect_failures++;
		note_error("connect %s: %s", c->alias, strerror(err));
		pending_count--;
		conn_close(c);
		return;
	}
	c->want_out = 1;
	set_events(c, 0);
	on_connected(c);
}

/* Churn bookkeeping. */
static uint64_t churn_started, churn_done, churn_failed, churn_last_done_ns;

static void conn_lost(conn_t *c, const char *why)
{
	if (c->state == ST_FREE)
		return;
	if (o_mode == M_CHURN) {
		if (c->state == ST_QUITTING) {
			uint64_t t = now_ns();
			churn_done++;
			churn_last_done_ns = t;
			hist_add(&sess, (t - c->t_start) / 1000);
		} else {
			churn_failed++;
			note_error("session %s lost in state %d: %s", c->alias, c->state, why);
			if (c->state != ST_READY)
				pending_count--;
		}
	} else {
		disconnects++;
		note_error("%s disconnected in state %d: %s", c->alias, c->state, why);
		if (c->state == ST_READY)
			ready_count--;
		else
			pending_count--;
	}
	conn_close(c);
}

static void on_readable(conn_t *c)
{
	for (int round = 0; round < 4; round++) {
		ssize_t n = recv(c->fd, rbuf, READ_BUF_BYTES, 0);
		if (n > 0) {
			bytes_in += (uint64_t)n;
			chunk_ns = now_ns();
			on_data(c, rbuf, (size_t)n);
			if (c->state == ST_FREE || n < READ_BUF_BYTES)
				return;
			continue;
		}
		if (n == 0) {
			conn_lost(c, "closed by server");
			return;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		if (errno == EINTR)
			continue;
		conn_lost(c, strerror(errno));
		return;
	}
}

/* The sessions of churn mode end here instead of staying in the room. */
static void became_ready(conn_t *c)
{
	if (o_mode == M_CHURN) {
		char text[4200];
		size_t n = build_text(text, 'X', 0);
		c->state = ST_QUITTING;
		pending_count--;
		switch (o_proto) {
		case P_CHATD:
			sendf(c, "%.*s\n/quit\n", (int)n, text);
			break;
		case P_REF:
			sendf(c, "%.*s\n", (int)n, text);
			shutdown(c->fd, SHUT_WR);
			break;
		case P_IRC:
			sendf(c, "PRIVMSG #bench :%.*s\r\nQUIT\r\n", (int)n, text);
			break;
		}
		return;
	}
	c->state = ST_READY;
	pending_count--;
	ready_count++;
}

/* Called every few events while dispatching, so that a long batch of reads does not
 * delay the open-loop send schedule. */
static void (*tick_hook)(void);

static int dispatch(double timeout_s)
{
	static struct epoll_event evs[MAX_EVENTS];
	if (timeout_s < 0)
		timeout_s = 0;
	struct timespec ts = {.tv_sec = (time_t)timeout_s,
			      .tv_nsec = (long)((timeout_s - (double)(time_t)timeout_s) * 1e9)};
	int n = epoll_pwait2(ep, evs, MAX_EVENTS, &ts, NULL);
	if (n < 0 && errno == ENOSYS)
		n = epoll_wait(ep, evs, MAX_EVENTS, (int)(timeout_s * 1000));
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		perror("epoll_wait");
		exit(2);
	}
	for (int i = 0; i < n; i++) {
		conn_t *c = evs[i].data.ptr;
		uint32_t e = evs[i].events;
		if (tick_hook && (i & 3) == 3)
			tick_hook();
		if (c->state == ST_FREE)
			continue;
		if (c->state == ST_CONNECTING) {
			connect_done(c);
			if (c->state == ST_FREE)
				continue;
			if (!(e & EPOLLIN))
				continue;
		}
		if (e & (EPOLLIN | EPOLLHUP | EPOLLERR))
			on_readable(c);
		if (c->state != ST_FREE && (e & EPOLLOUT))
			flush(c);
	}
	return n;
}

static double since_s(uint64_t t)
{
	return (double)(now_ns() - t) / 1e9;
}

/* Phases shared by fanout and idle ------------------------------------------------- */

static void make_alias(conn_t *c, unsigned long n)
{
	snprintf(c->alias, sizeof c->alias, "%s%05lu", o_prefix, n);
}

/* Connects and joins all clients, at most o_concurrency still joining at any time. */
static int join_all(int n)
{
	uint64_t start = now_ns(), last_report = start;
	int next = 0;
	while (ready_count < (uint64_t)n) {
		while (next < n && pending_count < (uint64_t)o_concurrency) {
			conn_t *c = &conns[next];
			c->idx = next;
			c->sender = next < o_senders;
			make_alias(c, (unsigned long)next);
			if (conn_open(c) < 0)
				return -1;
			next++;
		}
		dispatch(0.05);
		if (disconnects || connect_failures || refusals)
			return -1;
		if (since_s(start) > o_timeout) {
			note_error("join timeout: %llu of %d ready after %.0f s",
				   (unsigned long long)ready_count, n, o_timeout);
			return -1;
		}
		if (now_ns() - last_report > 2000000000ull) {
			last_report = now_ns();
			progress("%llu/%d joined after %.1f s", (unsigned long long)ready_count, n,
				 since_s(start));
		}
	}
	return 0;
}

static void handle_sync(conn_t *c, uint32_t id)
{
	c->sync_seen = id;
}

/* Client 0 sends sync messages until every other client has seen the latest one.
 * Since a server relays in order per connection, everything it sent a client before
 * (join notices) has then been read. For the reference server, which acknowledges no
 * alias, this is also how we learn that every client is in the room. */
static int sync_all(int n, double round_s)
{
	uint64_t start = now_ns();
	uint32_t first_id = sync_id + 1;
	for (;;) {
		sync_id++;
		send_chat(&conns[0], 'S', run_tag << 32 | sync_id);
		flush(&conns[0]);
		conns[0].sync_seen = sync_id;
		uint64_t round_start = now_ns();
		for (;;) {
			/* Any sync of this call will do: ids only grow, and a round that timed
			 * out may still be on its way to the slowest clients. */
			int missing = 0;
			for (int i = 0; i < n; i++)
				if (conns[i].state != ST_FREE && conns[i].sync_seen < first_id)
					missing++;
			if (!missing)
				return 0;
			if (disconnects)
				return -1;
			if (since_s(start) > o_timeout) {
				note_error("sync timeout: %d clients did not see the sync line", missing);
				return -1;
			}
			if (since_s(round_start) > round_s)
				break;
			dispatch(0.02);
		}
		/* Missed by someone not in the room yet; retry, backing off. */
		if (round_s < 1.0)
			round_s *= 2;
	}
}

/* Fan-out --------------------------------------------------------------------------- */

/* The open-loop schedule: message k is due at t0 + k * interval, from sender k % S. */
static uint64_t fo_total, fo_interval_ns, fo_t0, fo_k, fo_unsent, fo_max_lag_ns, fo_max_backlog;
static uint64_t fo_sent_from[MAX_PORTS]; /* messages sent by senders on each port */
static int *fo_dirty;

static void send_due(void)
{
	uint64_t t = now_ns();
	int ndirty = 0;
	while (fo_k < fo_total && fo_t0 + fo_k * fo_interval_ns <= t) {
		uint64_t sched = fo_t0 + fo_k * fo_interval_ns;
		if (t - sched > fo_max_lag_ns)
			fo_max_lag_ns = t - sched;
		conn_t *c = &conns[fo_k % (uint64_t)o_senders];
		if (c->state != ST_READY || pending_out(c) > OUT_CAP_BYTES) {
			fo_unsent++;
		} else {
			send_chat(c, 'M', t);
			fo_sent_from[c->idx % o_nports]++;
			if (!c->dirty) {
				c->dirty = 1;
				fo_dirty[ndirty++] = c->idx;
			}
		}
		fo_k++;
	}
	for (int i = 0; i < ndirty; i++) {
		conn_t *c = &conns[fo_dirty[i]];
		c->dirty = 0;
		if (c->state != ST_FREE)
			flush(c);
		if (pending_out(c) > fo_max_backlog)
			fo_max_backlog = pending_out(c);
	}
}

/* Summed utime+stime of every --server-pid (run.py gives one: the server). */
static double servers_cpu_s(void)
{
	double total = 0;
	for (int i = 0; i < o_npids; i++) {
		double s = proc_cpu_s(o_pids[i]);
		if (s < 0)
			return -1;
		total += s;
	}
	return o_npids ? total : -1;
}

static void pids_cpu_ns(double *out)
{
	for (int i = 0; i < o_npids; i++)
		out[i] = proc_cpu_ns(o_pids[i]);
}

/* A JSON array of numbers, e.g. [0.125,0.5], into buf. */
static const char *json_list(char *buf, size_t cap, const double *v, int n, const char *fmt)
{
	size_t len = 0;
	buf[len++] = '[';
	for (int i = 0; i < n && len + 32 < cap; i++) {
		if (i)
			buf[len++] = ',';
		len += (size_t)snprintf(buf + len, cap - len, fmt, v[i]);
	}
	buf[len++] = ']';
	buf[len] = 0;
	return buf;
}

static int run_fanout(void)
{
	int n = o_clients;
	double join_start = since_s(t_origin);
	if (join_all(n) < 0 || sync_all(n, o_proto == P_REF ? 0.3 : 1e9) < 0)
		return -1;
	double join_s = since_s(t_origin) - join_start;
	fo_total = (uint64_t)(o_rate * o_duration + 0.5);
	fo_interval_ns = (uint64_t)(1e9 / o_rate);
	fo_dirty = calloc((size_t)o_senders, sizeof(int));
	uint64_t total = fo_total;
	uint64_t expected_receivers = (uint64_t)(n - 1);
	double pid0[MAX_PIDS], pid1[MAX_PIDS], pid2[MAX_PIDS];
	pids_cpu_ns(pid0);
	double srv0 = servers_cpu_s(), gen0 = cpu_self_s();
	uint64_t t0 = fo_t0 = measure_from_ns = now_ns();
	uint64_t t_end = t0 + (uint64_t)(o_duration * 1e9);
	double srv1 = -1, gen1 = -1;
	int window_over = 0; /* not srv1 >= 0: without --server-pid srv1 stays -1 */
	uint64_t delivered_in_window = 0, last_delivery_ns = t0, last_count = 0;
	delivered = 0;
	memset(&lat, 0, sizeof lat);
	memset(&lat_local, 0, sizeof lat_local);
	memset(&lat_cross, 0, sizeof lat_cross);
	memset(port_delivered, 0, sizeof port_delivered);
	/* Send window. */
	int last_ready = 0;
	uint64_t last_read_ns = 0, coalesced = 0, reads = 0;
	tick_hook = send_due;
	while (fo_k < total) {
		send_due();
		if (delivered != last_count) {
			last_count = delivered;
			last_delivery_ns = now_ns();
		}
		if (fo_k >= total)
			break;
		/* Sleep at least MIN_SLEEP_NS: at tens of thousands of messages a second,
		 * waking for each one would cost more CPU than reading the deliveries.
		 * Messages are stamped when sent, so this shifts no latency figure. */
		uint64_t next = t0 + fo_k * fo_interval_ns;
		uint64_t now = now_ns();
		if (next > now && next - now < MIN_SLEEP_NS)
			next = now + MIN_SLEEP_NS;
		/* Busy (many sockets ready at once): read at most every COALESCE_NS, so that
		 * each read returns more lines. A server that writes a few lines per socket
		 * per loop otherwise costs the generator a syscall and an ACK per few lines. */
		if (last_ready >= COALESCE_READY && now < last_read_ns + COALESCE_NS) {
			uint64_t until = last_read_ns + COALESCE_NS < next ? last_read_ns + COALESCE_NS
									  : next;
			struct timespec ts = {.tv_sec = (time_t)(until / 1000000000ull),
					      .tv_nsec = (long)(until % 1000000000ull)};
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			coalesced++;
			continue;
		}
		last_ready = dispatch(next > now ? (double)(next - now) / 1e9 : 0);
		last_read_ns = now_ns();
		reads++;
	}
	tick_hook = NULL;
	uint64_t unsent = fo_unsent, max_lag_ns = fo_max_lag_ns, max_backlog = fo_max_backlog;
	/* The rest of the window, then the drain. */
	uint64_t expected = (total - unsent) * expected_receivers;
	uint64_t all_expected = total * expected_receivers;
	for (;;) {
		uint64_t t = now_ns();
		if (!window_over && t >= t_end) {
			window_over = 1;
			srv1 = servers_cpu_s();
			pids_cpu_ns(pid1);
			gen1 = cpu_self_s();
			delivered_in_window = delivered;
		}
		if (delivered != last_count) {
			last_count = delivered;
			last_delivery_ns = t;
		}
		if (window_over) {
			if (delivered >= expected)
				break;
			if ((double)(t - t_end) / 1e9 > o_drain)
				break;
			if ((double)(t - last_delivery_ns) / 1e9 > 1.0 && (double)(t - t_end) / 1e9 > 1.0)
				break;
		}
		dispatch(!window_over ? (double)(t_end - t) / 1e9 : 0.05);
	}
	pids_cpu_ns(pid2);
	double drained_s = since_s(t0);
	double window_s = (double)(t_end - t0) / 1e9;
	double span_s = (double)(last_delivery_ns - t0) / 1e9;
	if (span_s < window_s)
		span_s = window_s;
	/* Per server, CPU seconds over the send window and from its start until the drain
	 * ended; with several ports, per port, what its clients should have got (every
	 * message sent, less the sender's own) and got. */
	char extra[2048] = "", list[3][600];
	if (o_npids > 0) {
		double cpu_window[MAX_PIDS], cpu_drained[MAX_PIDS], rss[MAX_PIDS];
		double want[MAX_PORTS], got[MAX_PORTS];
		for (int i = 0; i < o_npids; i++) {
			cpu_window[i] = pid0[i] < 0 || pid1[i] < 0 ? -1 : (pid1[i] - pid0[i]) / 1e9;
			cpu_drained[i] = pid0[i] < 0 || pid2[i] < 0 ? -1 : (pid2[i] - pid0[i]) / 1e9;
			rss[i] = (double)proc_rss_kib(o_pids[i]);
		}
		for (int j = 0; j < o_nports; j++) {
			uint64_t here = (uint64_t)(n / o_nports + (j < n % o_nports)), w = 0;
			for (int k = 0; k < o_nports; k++)
				w += fo_sent_from[k] * (here - (k == j));
			want[j] = (double)w;
			got[j] = (double)port_delivered[j];
		}
		snprintf(extra, sizeof extra,
			 ",\"pid_cpu_s\":%s,\"pid_cpu_drained_s\":%s,\"pid_rss_kib\":%s,\"drained_s\":%.3f",
			 json_list(list[0], sizeof list[0], cpu_window, o_npids, "%.6f"),
			 json_list(list[1], sizeof list[1], cpu_drained, o_npids, "%.6f"),
			 json_list(list[2], sizeof list[2], rss, o_npids, "%.0f"), drained_s);
		if (o_nports > 1) {
			size_t len = strlen(extra);
			snprintf(extra + len, sizeof extra - len,
				 ",\"port_expected\":%s,\"port_delivered\":%s,\"lat_local_p50_ms\":%.3f,"
				 "\"lat_local_p99_ms\":%.3f,\"lat_cross_p50_ms\":%.3f,\"lat_cross_p99_ms\":%.3f",
				 json_list(list[0], sizeof list[0], want, o_nports, "%.0f"),
				 json_list(list[1], sizeof list[1], got, o_nports, "%.0f"),
				 hist_pct(&lat_local, 0.5) / 1000, hist_pct(&lat_local, 0.99) / 1000,
				 hist_pct(&lat_cross, 0.5) / 1000, hist_pct(&lat_cross, 0.99) / 1000);
		}
	}
	printf("{\"mode\":\"fanout\",\"clients\":%d,\"senders\":%d,\"rate\":%.1f,\"duration_s\":%.3f,"
	       "\"msg_bytes\":%d,\"join_s\":%.3f,\"sent\":%llu,\"unsent\":%llu,"
	       "\"expected\":%llu,\"expected_if_all_sent\":%llu,\"delivered\":%llu,"
	       "\"delivered_in_window\":%llu,\"deliveries_per_s\":%.1f,\"span_s\":%.3f,"
	       "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f,"
	       "\"server_cpu_pct\":%.1f,\"gen_cpu_pct\":%.1f,\"gen_max_lag_ms\":%.3f,"
	       "\"max_send_backlog_bytes\":%llu,\"coalesced_reads_pct\":%.1f,\"disconnects\":%llu,\"opers\":%llu,"
	       "\"server_rss_kib\":%ld,\"other_lines\":%llu,\"bytes_in\":%llu%s,\"error\":\"%s\"}\n",
	       n, o_senders, o_rate, window_s, o_msg_bytes, join_s,
	       (unsigned long long)(total - unsent), (unsigned long long)unsent,
	       (unsigned long long)expected, (unsigned long long)all_expected,
	       (unsigned long long)delivered, (unsigned long long)delivered_in_window,
	       (double)delivered / span_s, span_s, hist_pct(&lat, 0.5) / 1000,
	       hist_pct(&lat, 0.99) / 1000, hist_pct(&lat, 0.999) / 1000, (double)lat.max / 1000,
	       o_server_pid ? 100 * (srv1 - srv0) / window_s : -1, 100 * (gen1 - gen0) / window_s,
	       (double)max_lag_ns / 1e6, (unsigned long long)max_backlog,
	       reads ? 100.0 * (double)coalesced / (double)(reads + coalesced) : 0.0,
	       (unsigned long long)disconnects, (unsigned long long)opers_ok,
	       o_server_pid ? proc_rss_kib(o_server_pid) : -1L, (unsigned long long)other_lines,
	       (unsigned long long)bytes_in, extra, first_error);
	free(fo_dirty);
	return 0;
}

/* Idle capacity --------------------------------------------------------------------- */

static int run_idle(void)
{
	int n = o_clients;
	long rss0 = o_server_pid ? proc_rss_kib(o_server_pid) : -1;
	double srv0 = proc_cpu_s(o_server_pid);
	uint64_t t0 = now_ns();
	if (join_all(n) < 0)
		return -1;
	double joined_s = since_s(t0);
	progress("all %d joined after %.1f s; draining", n, joined_s);
	if (sync_all(n, o_proto == P_REF ? 1.0 : 1e9) < 0)
		return -1;
	double drained_s = since_s(t0);
	double srv1 = proc_cpu_s(o_server_pid);
	/* Let the server settle (free buffers) before reading its RSS. */
	uint64_t settle_end = now_ns() + (uint64_t)(o_settle * 1e9);
	while (now_ns() < settle_end)
		dispatch((double)(settle_end - now_ns()) / 1e9);
	long rss1 = o_server_pid ? proc_rss_kib(o_server_pid) : -1;
	/* One broadcast line from client 0 to the N-1 others. */
	bcast_sent_ns = now_ns();
	send_chat(&conns[0], 'B', bcast_sent_ns);
	flush(&conns[0]);
	conns[0].got_bcast = 1;
	uint64_t want = (uint64_t)(n - 1);
	while (bcast_got < want && since_s(bcast_sent_ns) < o_timeout && !disconnects)
		dispatch(0.05);
	if (bcast_got < want)
		note_error("broadcast reached %llu of %llu", (unsigned long long)bcast_got,
			   (unsigned long long)want);
	printf("{\"mode\":\"idle\",\"clients\":%d,\"join_s\":%.3f,\"join_drain_s\":%.3f,"
	       "\"join_server_cpu_s\":%.2f,\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,"
	       "\"rss_per_conn_kib\":%.3f,\"broadcast_reached\":%llu,\"broadcast_all_ms\":%.3f,"
	       "\"broadcast_p50_ms\":%.3f,\"disconnects\":%llu,\"bytes_in\":%llu,\"error\":\"%s\"}\n",
	       n, joined_s, drained_s, srv1 - srv0, rss0, rss1,
	       rss0 >= 0 && rss1 >= 0 ? (double)(rss1 - rss0) / n : -1,
	       (unsigned long long)bcast_got, bcast_got == want ? (double)bcast.max / 1000 : -1,
	       hist_pct(&bcast, 0.5) / 1000, (unsigned long long)disconnects,
	       (unsigned long long)bytes_in, first_error);
	return 0;
}

/* Churn ----------------------------------------------------------------------------- */

static int run_churn(void)
{
	int slots = o_concurrency;
	unsigned long counter = 0;
	double srv0 = proc_cpu_s(o_server_pid), gen0 = cpu_self_s();
	uint64_t t0 = now_ns(), t_end = t0 + (uint64_t)(o_duration * 1e9);
	int in_flight;
	for (;;) {
		uint64_t t = now_ns();
		in_flight = 0;
		for (int i = 0; i < slots; i++) {
			conn_t *c = &conns[i];
			if (c->state == ST_FREE && t < t_end) {
				c->idx = i;
				make_alias(c, counter++);
				if (conn_open(c) == 0)
					churn_started++;
				else
					churn_failed++;
			}
			if (c->state != ST_FREE)
				in_flight++;
		}
		if (t >= t_end && !in_flight)
			break;
		if (t >= t_end && since_s(t_end) > o_drain) {
			note_error("%d sessions still open %.0f s after the end", in_flight, o_drain);
			break;
		}
		if (churn_failed > 100)
			break;
		dispatch(0.05);
	}
	double srv1 = proc_cpu_s(o_server_pid), gen1 = cpu_self_s();
	uint64_t end = churn_last_done_ns > t_end ? churn_last_done_ns : t_end;
	double span_s = (double)(end - t0) / 1e9;
	printf("{\"mode\":\"churn\",\"concurrency\":%d,\"duration_s\":%.3f,\"span_s\":%.3f,"
	       "\"started\":%llu,\"completed\":%llu,\"failed\":%llu,\"sessions_per_s\":%.1f,"
	       "\"session_p50_ms\":%.3f,\"session_p99_ms\":%.3f,\"session_max_ms\":%.3f,"
	       "\"server_cpu_pct\":%.1f,\"gen_cpu_pct\":%.1f,\"error\":\"%s\"}\n",
	       slots, o_duration, span_s, (unsigned long long)churn_started,
	       (unsigned long long)churn_done, (unsigned long long)churn_failed,
	       (double)churn_done / span_s, hist_pct(&sess, 0.5) / 1000,
	       hist_pct(&sess, 0.99) / 1000, (double)sess.max / 1000,
	       o_server_pid ? 100 * (srv1 - srv0) / span_s : -1, 100 * (gen1 - gen0) / span_s,
	       first_error);
	return 0;
}

/* Main ------------------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen --mode fanout|idle|churn --proto chatd|ref|irc --port P[,P...]\n"
		"  [--host 127.0.0.1] [--clients N] [--senders S] [--rate MSGS_PER_S]\n"
		"  [--duration S] [--drain S] [--msg-bytes B] [--concurrency C] [--timeout S]\n"
		"  [--settle S] [--server-pid PID[,PID...]] [--alias-prefix P] [--oper NAME:PASS]\n"
		"  [--source-addrs N] [--progress]\n");
	exit(2);
}

static void fail_json(const char *mode)
{
	printf("{\"mode\":\"%s\",\"ready\":%llu,\"disconnects\":%llu,\"connect_failures\":%llu,"
	       "\"refusals\":%llu,\"error\":\"%s\"}\n",
	       mode, (unsigned long long)ready_count, (unsigned long long)disconnects,
	       (unsigned long long)connect_failures, (unsigned long long)refusals,
	       first_error[0] ? first_error : "failed");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"mode", 1, 0, 'm'},	 {"proto", 1, 0, 'P'},	  {"host", 1, 0, 'h'},
		{"port", 1, 0, 'p'},	 {"clients", 1, 0, 'n'},  {"senders", 1, 0, 's'},
		{"rate", 1, 0, 'r'},	 {"duration", 1, 0, 'd'}, {"drain", 1, 0, 'D'},
		{"msg-bytes", 1, 0, 'b'}, {"concurrency", 1, 0, 'c'}, {"timeout", 1, 0, 't'},
		{"settle", 1, 0, 'S'},	 {"server-pid", 1, 0, 'x'}, {"alias-prefix", 1, 0, 'a'},
		{"oper", 1, 0, 'o'},	 {"progress", 0, 0, 'v'}, {"source-addrs", 1, 0, 'A'},
		{0, 0, 0, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'm':
			o_mode = !strcmp(optarg, "fanout") ? M_FANOUT
				 : !strcmp(optarg, "idle") ? M_IDLE
				 : !strcmp(optarg, "churn") ? M_CHURN
							    : -1;
			break;
		case 'P':
			o_proto = !strcmp(optarg, "chatd") ? P_CHATD
				  : !strcmp(optarg, "ref")   ? P_REF
				  : !strcmp(optarg, "irc")   ? P_IRC
							     : -1;
			break;
		case 'h': o_host = optarg; break;
		case 'p': o_nports = parse_int_list(optarg, o_ports, MAX_PORTS); break;
		case 'n': o_clients = atoi(optarg); break;
		case 's': o_senders = atoi(optarg); break;
		case 'r': o_rate = atof(optarg); break;
		case 'd': o_duration = atof(optarg); break;
		case 'D': o_drain = atof(optarg); break;
		case 'b': o_msg_bytes = atoi(optarg); break;
		case 'c': o_concurrency = atoi(optarg); break;
		case 't': o_timeout = atof(optarg); break;
		case 'S': o_settle = atof(optarg); break;
		case 'x':
			o_npids = parse_int_list(optarg, o_pids, MAX_PIDS);
			o_server_pid = o_npids > 0 ? o_pids[0] : -1;
			break;
		case 'a': o_prefix = optarg; break;
		case 'o': o_oper = strchr(optarg, ':') ? optarg : NULL; break;
		case 'v': o_progress = 1; break;
		case 'A': o_source_addrs = atoi(optarg); break;
		default: usage();
		}
	}
	if (o_mode < 0 || o_proto < 0 || o_nports <= 0 || o_server_pid < 0 || o_clients < 2 ||
	    o_senders < 1 || o_senders > o_clients || o_rate <= 0 || o_msg_bytes < TAIL_LEN + 1 ||
	    o_msg_bytes > 4000 || o_concurrency < 1 || o_source_addrs < 0 || o_source_addrs > 254)
		usage();
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (int i = 0; i < o_nports; i++) {
		struct sockaddr_in *addr = &server_addrs[i];
		memset(addr, 0, sizeof *addr);
		addr->sin_family = AF_INET;
		addr->sin_port = htons((uint16_t)o_ports[i]);
		if (o_ports[i] > 65535 || inet_pton(AF_INET, o_host, &addr->sin_addr) != 1)
			usage();
	}
	static const char prefix[] = "bench ";
	for (int i = 0; i < (int)sizeof payload_fill; i++)
		payload_fill[i] = i < (int)sizeof prefix - 1 ? prefix[i] : 'x';
	nconns = o_mode == M_CHURN ? o_concurrency : o_clients;
	conns = calloc((size_t)nconns, sizeof(conn_t));
	for (int i = 0; i < nconns; i++)
		conns[i].fd = -1;
	rbuf = malloc(READ_BUF_BYTES);
	ep = epoll_create1(EPOLL_CLOEXEC);
	t_origin = now_ns();
	run_tag = ((uint64_t)getpid() << 8 ^ t_origin) & 0xffffffffull;
	int rc;
	const char *name = o_mode == M_FANOUT ? "fanout" : o_mode == M_IDLE ? "idle" : "churn";
	if (o_mode == M_FANOUT)
		rc = run_fanout();
	else if (o_mode == M_IDLE)
		rc = run_idle();
	else
		rc = run_churn();
	if (rc < 0)
		fail_json(name);
	fflush(stdout);
	/* Close fast: the OS tears the sockets down with the process. */
	_exit(rc < 0 ? 1 : 0);
}
