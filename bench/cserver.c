/*
 * cserver: the smallest fan-out chat server in C, the benchmark's stand-in for the
 * physical limit of one core (bench/run.py builds it like loadgen and runs it as the
 * target "cserver").
 *
 * It speaks what bench/reference_server.py speaks: a client's first line is its alias,
 * every later line goes to every other named client as "<alias> text\r\n". Nothing
 * else: no prompts, no notices, no limits, no logging, no bound on what it buffers
 * for a reader who does not read. One epoll loop, as an event-driven server in C
 * would be written:
 *
 *   - lines are read through one shared buffer; a connection owns memory only for a
 *     partial line or output the kernel has not taken, so an idle one costs its
 *     struct and the kernel's socket;
 *   - a line is copied into each recipient's output buffer, and every buffer written
 *     to during one pass over epoll's ready list is sent once at the end of the pass
 *     (one send() per recipient per pass, as chatd sends once per reactor turn);
 *   - what the kernel does not take waits for EPOLLOUT.
 *
 * Run: cserver --port 12345 [--interface 127.0.0.1]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF_BYTES (64 * 1024)
#define MAX_LINE_BYTES 8192
#define MAX_ALIAS_BYTES 64
#define MAX_EVENTS 1024
#define LISTEN_BACKLOG 4096

typedef struct conn {
	int fd;
	int closed;
	int member_idx; /* index in members[], -1 until named */
	int dirty;	/* in the dirty list: has output to send at the end of the pass */
	int watching_out;
	char alias[MAX_ALIAS_BYTES];
	size_t alias_len;
	char *partial; /* an incomplete line carried over to the next read */
	size_t plen;
	char *out;
	size_t olen, ooff, ocap;
} conn_t;

static int ep;
static conn_t **members;
static size_t nmembers, members_cap;
static conn_t **dirty;
static size_t ndirty, dirty_cap;
static conn_t **dead;
static size_t ndead, dead_cap;

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		perror("realloc");
		exit(1);
	}
	return q;
}

static void push(conn_t ***list, size_t *n, size_t *cap, conn_t *c)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 1024;
		*list = xrealloc(*list, *cap * sizeof **list);
	}
	(*list)[(*n)++] = c;
}

static void conn_close(conn_t *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	if (c->member_idx >= 0) { /* swap-remove from the members */
		conn_t *last = members[--nmembers];
		members[c->member_idx] = last;
		last->member_idx = c->member_idx;
		c->member_idx = -1;
	}
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	/* Freed after the pass: later events of this pass may still point at it. */
	push(&dead, &ndead, &dead_cap, c);
}

static void append_out(conn_t *c, const char *p, size_t n)
{
	if (c->olen + n > c->ocap) {
		if (c->ooff) { /* reclaim what was sent before growing */
			memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
			c->olen -= c->ooff;
			c->ooff = 0;
		}
		if (c->olen + n > c->ocap) {
			size_t cap = c->ocap ? c->ocap : 256;
			while (cap < c->olen + n)
				cap *= 2;
			c->out = xrealloc(c->out, cap);
			c->ocap = cap;
		}
	}
	memcpy(c->out + c->olen, p, n);
	c->olen += n;
	if (!c->dirty) {
		c->dirty = 1;
		push(&dirty, &ndirty, &dirty_cap, c);
	}
}

static void watch_out(conn_t *c, int on)
{
	if (c->watching_out == on)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->watching_out = on;
}

static void flush_out(conn_t *c)
{
	while (c->ooff < c->olen) {
		ssize_t n = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				watch_out(c, 1);
				return;
			}
			conn_close(c);
			return;
		}
		c->ooff += (size_t)n;
	}
	/* All sent: an idle connection keeps no buffer. */
	free(c->out);
	c->out = NULL;
	c->olen = c->ooff = c->ocap = 0;
	watch_out(c, 0);
}

static void on_line(conn_t *c, char *line, size_t n)
{
	if (n && line[n - 1] == '\r')
		n--;
	if (c->member_idx < 0) {
		c->alias_len = n < MAX_ALIAS_BYTES ? n : MAX_ALIAS_BYTES;
		memcpy(c->alias, line, c->alias_len);
		c->member_idx = (int)nmembers;
		push(&members, &nmembers, &members_cap, c);
		return;
	}
	char msg[MAX_ALIAS_BYTES + MAX_LINE_BYTES + 8];
	size_t len = 0;
	msg[len++] = '<';
	memcpy(msg + len, c->alias, c->alias_len);
	len += c->alias_len;
	msg[len++] = '>';
	msg[len++] = ' ';
	memcpy(msg + len, line, n);
	len += n;
	msg[len++] = '\r';
	msg[len++] = '\n';
	for (size_t i = 0; i < nmembers; i++)
		if (members[i] != c)
			append_out(members[i], msg, len);
}

static void on_readable(conn_t *c, char *buf)
{
	for (;;) {
		ssize_t got = recv(c->fd, buf, READ_BUF_BYTES, 0);
		if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			conn_close(c);
			return;
		}
		if (got < 0)
			return;
		char *p = buf, *end = buf + got;
		while (p < end && !c->closed) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			if (!nl) { /* keep the partial line */
				size_t rest = (size_t)(end - p);
				if (c->plen + rest > MAX_LINE_BYTES) {
					conn_close(c);
					return;
				}
				c->partial = xrealloc(c->partial, c->plen + rest);
				memcpy(c->partial + c->plen, p, rest);
				c->plen += rest;
				break;
			}
			if (c->plen) {
				size_t part = (size_t)(nl - p);
				if (c->plen + part > MAX_LINE_BYTES) {
					conn_close(c);
					return;
				}
				c->partial = xrealloc(c->partial, c->plen + part);
				memcpy(c->partial + c->plen, p, part);
				on_line(c, c->partial, c->plen + part);
				free(c->partial);
				c->partial = NULL;
				c->plen = 0;
			} else {
				on_line(c, p, (size_t)(nl - p));
			}
			p = nl + 1;
		}
		if (c->closed || got < READ_BUF_BYTES)
			return;
	}
}

static void accept_all(int listener)
{
	for (;;) {
		int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return; /* EAGAIN, or out of descriptors: try again on the next event */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		conn_t *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->member_idx = -1;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"port", 1, 0, 'p'}, {"interface", 1, 0, 'i'}, {0, 0, 0, 0}};
	const char *interface = "127.0.0.1";
	int port = 0, ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'p': port = atoi(optarg); break;
		case 'i': interface = optarg; break;
		default:
			fprintf(stderr, "usage: cserver --port P [--interface 127.0.0.1]\n");
			return 2;
		}
	}
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "usage: cserver --port P [--interface 127.0.0.1]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, interface, &addr.sin_addr) != 1) {
		fprintf(stderr, "cserver: bad interface %s\n", interface);
		return 2;
	}
	if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
	    listen(listener, LISTEN_BACKLOG) < 0) {
		perror("cserver: listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
	char *buf = malloc(READ_BUF_BYTES);
	struct epoll_event events[MAX_EVENTS];
	for (;;) {
		int n = epoll_wait(ep, events, MAX_EVENTS, -1);
		if (n < 0 && errno != EINTR) {
			perror("cserver: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			conn_t *c = events[i].data.ptr;
			if (!c) {
				accept_all(listener);
				continue;
			}
			if (c->closed)
				continue;
			if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				on_readable(c, buf);
			if (!c->closed && (events[i].events & EPOLLOUT))
				flush_out(c);
		}
		for (size_t i = 0; i < ndirty; i++) {
			conn_t *c = dirty[i];
			c->dirty = 0;
			if (!c->closed && !c->watching_out)
				flush_out(c);
		}
		ndirty = 0;
		for (size_t i = 0; i < ndead; i++) {
			free(dead[i]->partial);
			free(dead[i]->out);
			free(dead[i]);
		}
		ndead = 0;
	}
}
