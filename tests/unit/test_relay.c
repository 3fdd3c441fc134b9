/*
 * test_relay.c - the relay process end to end: relay_new/relay_run in a
 * forked child, driven over real socketpairs with the relay protocol
 * (ipc.h), delivering to scripted SMTP servers on loopback (threads of
 * this process) at an unprivileged port (relay_set_port()).
 *
 * Address literals ("[127.0.0.1]") need no DNS. The MX cases (next MX
 * after a 421 greeting, null MX, NXDOMAIN) start dnsmasq on 127.0.0.1 at
 * a free port, as tests/integration/test_dns.py does, and skip without
 * it.
 */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "conf/config.h"
#include "mail/envelope.h"
#include "lib/ipc.h"
#include "proto/ctl.h"
#include "proto/relay_job.h"
#include "lib/log.h"
#include "relay/relay.h"
#include "lib/util.h"

#define WAIT_MS 20000
#define QID "0123456789abcdef"

#include "ipc_test_util.h"

/* ------------------------------------------------------------------ */
/* scripted SMTP servers */

enum srv_mode {
	SRV_ACCEPT,     /* 220; RCPT reject* -> 550, defer* -> 450, else 250 */
	SRV_GREET421,   /* 421 greeting, close */
	SRV_STALL,      /* never says anything */
};

#define SRV_MAX_LISTEN 3
#define SRV_MAX_CONN 16

struct srv {
	int lfd[SRV_MAX_LISTEN];
	enum srv_mode mode[SRV_MAX_LISTEN];
	size_t nl;
	unsigned port;
	int stop[2];
	pthread_t thr;
	pthread_t conn_thr[SRV_MAX_CONN];
	size_t nconn_thr;
	pthread_mutex_t mu;
	/* counters, under mu */
	unsigned conns[SRV_MAX_LISTEN];
	unsigned txs_at[SRV_MAX_LISTEN];  /* messages, per listener */
	unsigned txs, quits;
	unsigned open_now, open_max;  /* from accept to our 221 (or close) */
	char body[8192];
	size_t bodylen;
	size_t total;       /* octets of the last message, whatever its size */
	unsigned long sum;  /* and a simple checksum of them */
};

struct srv_conn {
	struct srv *s;
	int fd;
	enum srv_mode mode;
	size_t li;          /* listener index */
};

static void
srv_put(int fd, const char *s)
{
	(void)send(fd, s, strlen(s), MSG_NOSIGNAL);
}

/* One CRLF line (without it) into buf; -1 on EOF/timeout. */
static int
srv_line(int fd, char *buf, size_t size)
{
	size_t o = 0;

	for (;;) {
		char ch;
		ssize_t n = recv(fd, &ch, 1, 0);

		if (n <= 0)
			return -1;
		if (ch == '\n') {
			if (o > 0 && buf[o - 1] == '\r')
				o--;
			buf[o] = '\0';
			return 0;
		}
		if (o + 1 < size)
			buf[o++] = ch;
	}
}

static void *
srv_conn_main(void *arg)
{
	struct srv_conn *sc = arg;
	struct srv *s = sc->s;
	int fd = sc->fd;
	char line[1100];
	struct timeval tv = { 20, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	bool counted = true;
	if (sc->mode == SRV_GREET421) {
		srv_put(fd, "421 4.3.2 busy, try later\r\n");
		goto out;
	}
	if (sc->mode == SRV_STALL) {
		while (recv(fd, line, sizeof(line), 0) > 0)
			;
		goto out;
	}
	srv_put(fd, "220 sink.test ESMTP\r\n");
	while (srv_line(fd, line, sizeof(line)) == 0) {
		if (strncasecmp(line, "EHLO", 4) == 0)
			srv_put(fd, "250-sink.test\r\n250-8BITMIME\r\n"
			    "250 ENHANCEDSTATUSCODES\r\n");
		else if (strncasecmp(line, "MAIL", 4) == 0 ||
		    strncasecmp(line, "RSET", 4) == 0)
			srv_put(fd, "250 2.0.0 ok\r\n");
		else if (strncasecmp(line, "RCPT TO:<reject", 15) == 0)
			srv_put(fd, "550 5.1.1 no such user\r\n");
		else if (strncasecmp(line, "RCPT TO:<defer", 14) == 0)
			srv_put(fd, "450 4.2.0 mailbox busy\r\n");
		else if (strncasecmp(line, "RCPT", 4) == 0)
			srv_put(fd, "250 2.1.5 ok\r\n");
		else if (strncasecmp(line, "DATA", 4) == 0) {
			char body[8192];
			size_t bl = 0, total = 0;
			unsigned long sum = 0;

			srv_put(fd, "354 go ahead\r\n");
			while (srv_line(fd, line, sizeof(line)) == 0 &&
			    strcmp(line, ".") != 0) {
				/* RFC 5321 4.5.2: undo the dot-stuffing */
				const char *t = line[0] == '.' ? line + 1 : line;
				size_t l = strlen(t);

				for (size_t k = 0; k < l; k++)
					sum = sum * 31 + (unsigned char)t[k];
				sum = sum * 31 + '\n';
				total += l + 2;
				if (bl + l + 2 < sizeof(body)) {
					memcpy(body + bl, t, l);
					memcpy(body + bl + l, "\r\n", 2);
					bl += l + 2;
				}
			}
			pthread_mutex_lock(&s->mu);
			memcpy(s->body, body, bl);
			s->bodylen = bl;
			s->total = total;
			s->sum = sum;
			s->txs++;
			s->txs_at[sc->li]++;
			pthread_mutex_unlock(&s->mu);
			srv_put(fd, "250 2.0.0 Ok: queued as X\r\n");
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			/* before the 221: the client closes after it, and
			 * only then may it connect again */
			pthread_mutex_lock(&s->mu);
			s->quits++;
			s->open_now--;
			counted = false;
			pthread_mutex_unlock(&s->mu);
			srv_put(fd, "221 2.0.0 bye\r\n");
			break;
		} else
			srv_put(fd, "502 5.5.1 what\r\n");
	}
out:
	if (counted) {
		pthread_mutex_lock(&s->mu);
		s->open_now--;
		pthread_mutex_unlock(&s->mu);
	}
	close(fd);
	free(sc);
	return NULL;
}

static void *
srv_main(void *arg)
{
	struct srv *s = arg;

	for (;;) {
		struct pollfd p[SRV_MAX_LISTEN + 1];

		for (size_t i = 0; i < s->nl; i++)
			p[i] = (struct pollfd){ s->lfd[i], POLLIN, 0 };
		p[s->nl] = (struct pollfd){ s->stop[0], POLLIN, 0 };
		if (poll(p, s->nl + 1, -1) < 0)
			continue;
		if (p[s->nl].revents)
			return NULL;
		for (size_t i = 0; i < s->nl; i++) {
			struct srv_conn *sc;
			int fd;

			if (!p[i].revents || (fd = accept(s->lfd[i], NULL, NULL)) < 0)
				continue;
			if (s->nconn_thr >= SRV_MAX_CONN) {
				close(fd);
				continue;
			}
			pthread_mutex_lock(&s->mu);
			s->conns[i]++;
			if (++s->open_now > s->open_max)
				s->open_max = s->open_now;
			pthread_mutex_unlock(&s->mu);
			sc = xcalloc(1, sizeof(*sc));
			sc->s = s;
			sc->fd = fd;
			sc->mode = s->mode[i];
			sc->li = i;
			pthread_create(&s->conn_thr[s->nconn_thr++], NULL,
			    srv_conn_main, sc);
		}
	}
}

static int
listen_on(const char *ip, unsigned port, unsigned *port_r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &sin.sin_addr);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, 16) == -1) {
		close(fd);
		return -1;
	}
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	if (port_r != NULL)
		*port_r = ntohs(sin.sin_port);
	return fd;
}

/* Servers on ips[0..n) at one port, each with its mode. */
static struct srv *
srv_start(const char *const *ips, const enum srv_mode *modes, size_t n)
{
	struct srv *s = xcalloc(1, sizeof(*s));

	pthread_mutex_init(&s->mu, NULL);
	for (int tries = 0; tries < 20; tries++) {
		s->nl = 0;
		s->lfd[0] = listen_on(ips[0], 0, &s->port);
		assert_true(s->lfd[0] >= 0);
		s->nl = 1;
		for (size_t i = 1; i < n; i++) {
			s->lfd[i] = listen_on(ips[i], s->port, NULL);
			if (s->lfd[i] < 0)
				break;
			s->nl++;
		}
		if (s->nl == n)
			break;
		for (size_t i = 0; i < s->nl; i++)
			close(s->lfd[i]);
	}
	assert_int_equal(s->nl, n);
	for (size_t i = 0; i < n; i++)
		s->mode[i] = modes[i];
	assert_int_equal(pipe(s->stop), 0);
	return s;
}

static void
srv_run(struct srv *s)
{
	pthread_create(&s->thr, NULL, srv_main, s);
}

static void
srv_stop(struct srv *s)
{
	assert_int_equal(write(s->stop[1], "x", 1), 1);
	pthread_join(s->thr, NULL);
	for (size_t i = 0; i < s->nl; i++)
		close(s->lfd[i]);
	for (size_t i = 0; i < s->nconn_thr; i++)
		pthread_join(s->conn_thr[i], NULL);
	close(s->stop[0]);
	close(s->stop[1]);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static unsigned
srv_count(struct srv *s, unsigned *what)
{
	unsigned v;

	pthread_mutex_lock(&s->mu);
	v = *what;
	pthread_mutex_unlock(&s->mu);
	return v;
}

/* ------------------------------------------------------------------ */
/* the relay child */

struct fx {
	struct config *cfg;
	pid_t pid;
	int ctl;
	int chan;
	char logpath[64];
	pid_t dnsmasq;
	char dnsdir[64];
	char resolver[32];
};

static int
setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));

	log_set_level(LOG_LEVEL_WARN);
	f->cfg = config_load(NULL, NULL);
	assert_non_null(f->cfg);
	free(f->cfg->hostname);
	f->cfg->hostname = xstrdup("relay.tern.test");
	f->cfg->allow_loopback_mx = 1;
	f->cfg->max_message_size = 64 * 1024;
	f->pid = f->dnsmasq = -1;
	f->ctl = f->chan = -1;
	util_strlcpy(f->logpath, "/tmp/tern-relay-log-XXXXXX", sizeof(f->logpath));
	int fd = mkstemp(f->logpath);
	assert_true(fd >= 0);
	close(fd);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	if (f->pid > 0) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
	}
	if (f->dnsmasq > 0) {
		kill(f->dnsmasq, SIGTERM);
		waitpid(f->dnsmasq, NULL, 0);
	}
	if (f->dnsdir[0] != '\0') {
		char p[128];

		snprintf(p, sizeof(p), "%s/pid", f->dnsdir);
		unlink(p);
		rmdir(f->dnsdir);
	}
	if (f->ctl != -1)
		close(f->ctl);
	if (f->chan != -1)
		close(f->chan);
	unlink(f->logpath);
	config_free(&f->cfg);
	free(f);
	return 0;
}

static void
start_relay(struct fx *f, unsigned port)
{
	int sp[2][2];   /* control and job channels */

	f->pid = ipc_test_fork(sp, 2);
	if (f->pid == 0) {
		char err[256];
		struct relay *r;
		int status, lfd;

		/* every line (and a sanitizer's report) to the log file */
		lfd = open(f->logpath, O_WRONLY | O_APPEND);
		dup2(lfd, STDERR_FILENO);
		close(lfd);
		log_set_level(LOG_LEVEL_INFO);
		log_set_role("relay");
		r = relay_new(f->cfg, err, sizeof(err));
		if (r == NULL) {
			log_err("relay_new: %s", err);
			_exit(3);
		}
		relay_set_port(r, port);
		status = relay_run(r, sp[0][1], sp[1][1]);
		relay_free(&r);
		config_free(&f->cfg);
		free(f);
		/* exit, not _exit: LeakSanitizer checks the relay too. */
		exit(status);
	}
	f->ctl = sp[0][0];
	f->chan = sp[1][0];
}

static int
stop_relay(struct fx *f)
{
	if (f->pid <= 0)
		return -1;
	(void)send_ctl(f->ctl, CTL_SHUTDOWN, -1);
	return ipc_test_reap(&f->pid);
}

static char *
read_log(struct fx *f)
{
	static char buf[65536];
	int fd = open(f->logpath, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void
send_job(int fd, uint64_t id, const char *domain, const char *const *rcpts,
    size_t n, const char *body)
{
	struct envelope env;
	struct evbuffer *b = evbuffer_new();

	envelope_init(&env);
	util_strlcpy(env.id, QID, sizeof(env.id));
	env.arrival = util_now_us() / 1000000;
	envelope_set(&env.sender, "sender@client.test");
	envelope_set(&env.helo, "client.test");
	envelope_set(&env.client_addr, "127.0.0.1");
	envelope_set(&env.protocol, "ESMTP");
	for (size_t i = 0; i < n; i++)
		envelope_add_rcpt(&env, rcpts[i], NULL, 0);
	evbuffer_add_printf(b, "domain %s\n", domain);
	envelope_serialize(&env, b);
	send_frame(fd, RELAY_JOB_START, id, evbuffer_pullup(b, -1),
	    evbuffer_get_length(b));
	evbuffer_free(b);
	envelope_clear(&env);
	if (body != NULL) {
		send_frame(fd, RELAY_JOB_DATA, id, body, strlen(body));
		send_frame(fd, RELAY_JOB_END, id, NULL, 0);
	}
}

/* The RESULT of job id, whole payload in buf. */
static void
recv_result(struct fx *f, uint64_t id, char *buf, size_t size)
{
	struct ipc_hdr h;
	int rc = recv_frame_ms(f->chan, &h, buf, size, WAIT_MS);

	if (rc != 1)
		fail_msg("no result for job %llu (%s); relay log:\n%s",
		    (unsigned long long)id, rc == 0 ? "EOF" : "timeout",
		    read_log(f));
	assert_int_equal(h.type, RELAY_JOB_RESULT);
	assert_int_equal(h.id, id);
}

#define assert_has(hay, needle)                                                \
	do {                                                                   \
		if (strstr((hay), (needle)) == NULL)                           \
			fail_msg("'%s' not in:\n%s", (needle), (hay));         \
	} while (0)

/* ------------------------------------------------------------------ */
/* cases */

static const char BODY[] =
    "Subject: relay test\r\n"
    "\r\n"
    "line one\r\n"
    ".leading dot\r\n"
    "last\r\n";

/* One connection: each recipient its own verdict; the content arrives
 * byte for byte (dot-stuffing undone by the server); log lines. */
static void
test_per_recipient_results(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_ACCEPT };
	struct srv *s = srv_start(ip, m, 1);
	const char *rcpts[] = { "ok@dest.test", "reject@dest.test",
	    "defer@dest.test" };
	char res[4096];

	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 7, "[127.0.0.1]", rcpts, 3, BODY);
	recv_result(f, 7, res, sizeof(res));
	assert_has(res, "via [127.0.0.1] 127.0.0.1 none\n");
	assert_has(res, "\n0 D 250 2.0.0 ");
	assert_has(res, "\n1 F 550 5.1.1 no such user\n");
	assert_has(res, "\n2 T 450 4.2.0 mailbox busy\n");
	assert_int_equal(stop_relay(f), 0);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->bodylen, strlen(BODY));
	assert_memory_equal(s->body, BODY, s->bodylen);
	pthread_mutex_unlock(&s->mu);
	/* the cached connection got its QUIT at shutdown */
	for (int i = 0; i < 100 && srv_count(s, &s->quits) == 0; i++)
		usleep(20000);
	if (srv_count(s, &s->quits) != 1)
		fail_msg("no QUIT at shutdown; relay log:\n%s", read_log(f));
	srv_stop(s);

	char *log = read_log(f);
	assert_has(log, "relay event=ready");
	assert_has(log, "relay id=" QID " rcpt=ok@dest.test mx=[127.0.0.1] "
	    "ip=127.0.0.1 tls=none reply=\"250 2.0.0 ");
	assert_has(log, "state=delivered delay=");
	assert_has(log, "rcpt=reject@dest.test mx=[127.0.0.1] ip=127.0.0.1 "
	    "tls=none reply=\"550 5.1.1 no\\x20such\\x20user\" state=failed");
	assert_has(log, "state=deferred");
}

/* Two jobs for one server, one after the other: one connection (the
 * reuse time is long, so the second job comes well within it). */
static void
test_connection_reuse(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_ACCEPT };
	struct srv *s = srv_start(ip, m, 1);
	const char *r1[] = { "a@dest.test" }, *r2[] = { "b@dest.test" };
	char res[4096];

	f->cfg->relay_connection_reuse_time = 300;
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 1, "[127.0.0.1]", r1, 1, BODY);
	recv_result(f, 1, res, sizeof(res));
	assert_has(res, "0 D 250 ");
	send_job(f->chan, 2, "[127.0.0.1]", r2, 1, "Subject: two\r\n\r\nx\r\n");
	recv_result(f, 2, res, sizeof(res));
	assert_has(res, "0 D 250 ");
	assert_int_equal(srv_count(s, &s->conns[0]), 1);
	assert_int_equal(srv_count(s, &s->txs), 2);
	assert_int_equal(srv_count(s, &s->quits), 0);
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
	assert_has(read_log(f), "relay id=" QID " event=conn-reuse "
	    "mx=[127.0.0.1] ip=127.0.0.1 uses=1 idle=");
}

/* No job wants the cached connection within relay_connection_reuse_time
 * (1 s): it says QUIT, logged, and a later job gets a new connection.
 * With 0, no connection is ever kept. */
static void
test_idle_close(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_ACCEPT };
	struct srv *s = srv_start(ip, m, 1);
	const char *r1[] = { "a@dest.test" };
	char res[4096];

	f->cfg->relay_connection_reuse_time = 1;
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 1, "[127.0.0.1]", r1, 1, BODY);
	recv_result(f, 1, res, sizeof(res));
	assert_has(res, "0 D 250 ");
	for (int i = 0; i < 800 && srv_count(s, &s->quits) == 0; i++)
		usleep(25000);
	if (srv_count(s, &s->quits) != 1)
		fail_msg("the idle connection was kept; relay log:\n%s",
		    read_log(f));
	assert_has(read_log(f), "relay event=conn-close reason=idle "
	    "mx=[127.0.0.1] ip=127.0.0.1 uses=1\n");
	send_job(f->chan, 2, "[127.0.0.1]", r1, 1, BODY);
	recv_result(f, 2, res, sizeof(res));
	assert_has(res, "0 D 250 ");
	assert_int_equal(srv_count(s, &s->conns[0]), 2);
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);

	/* relay_connection_reuse_time 0: QUIT after every transaction */
	s = srv_start(ip, m, 1);
	f->cfg->relay_connection_reuse_time = 0;
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	for (uint64_t id = 3; id <= 4; id++) {
		send_job(f->chan, id, "[127.0.0.1]", r1, 1, BODY);
		recv_result(f, id, res, sizeof(res));
		assert_has(res, "0 D 250 ");
	}
	assert_int_equal(srv_count(s, &s->conns[0]), 2);
	for (int i = 0; i < 800 && srv_count(s, &s->quits) < 2; i++)
		usleep(25000);
	assert_int_equal(srv_count(s, &s->quits), 2);
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
	if (strstr(read_log(f), "event=conn-reuse") != NULL)
		fail_msg("reused with relay_connection_reuse_time 0:\n%s",
		    read_log(f));
}

/* A body larger than the client's output high-water mark and than one
 * IPC frame: sent in pieces as the socket drains, arrives whole. */
static void
test_large_body(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_ACCEPT };
	struct srv *s = srv_start(ip, m, 1);
	const char *rcpts[] = { "a@dest.test" };
	size_t n = 900 * 1024, o = 0;
	char *body = xmalloc(n + 1);
	unsigned long sum = 0;
	char res[4096];

	/* 100-octet lines, some starting with a dot */
	for (size_t line = 0; o + 100 <= n; line++) {
		memset(body + o, line % 7 == 0 ? '.' : 'a' + (char)(line % 26), 98);
		memcpy(body + o + 98, "\r\n", 2);
		for (size_t k = 0; k < 98; k++)
			sum = sum * 31 + (unsigned char)body[o + k];
		sum = sum * 31 + '\n';
		o += 100;
	}
	n = o;
	f->cfg->max_message_size = 1024 * 1024;
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 4, "[127.0.0.1]", rcpts, 1, NULL);
	for (size_t p = 0; p < n; p += IPC_MAX_PAYLOAD)
		send_frame(f->chan, RELAY_JOB_DATA, 4, body + p,
		    n - p < IPC_MAX_PAYLOAD ? n - p : IPC_MAX_PAYLOAD);
	send_frame(f->chan, RELAY_JOB_END, 4, NULL, 0);
	recv_result(f, 4, res, sizeof(res));
	assert_has(res, "\n0 D 250 2.0.0 ");
	assert_int_equal(stop_relay(f), 0);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->total, n);
	assert_true(s->sum == sum);
	pthread_mutex_unlock(&s->mu);
	srv_stop(s);
	free(body);
}

/* max_relay_connections 2: a third server gets its connection only after
 * a cached one has said QUIT, long before the idle timer. */
static void
test_connection_limit(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1", "127.0.0.2", "127.0.0.3" };
	enum srv_mode m[] = { SRV_ACCEPT, SRV_ACCEPT, SRV_ACCEPT };
	struct srv *s = srv_start(ip, m, 3);
	const char *rcpts[] = { "a@dest.test" };
	char res[4096];

	f->cfg->max_relay_connections = 2;
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 1, "[127.0.0.1]", rcpts, 1, BODY);
	send_job(f->chan, 2, "[127.0.0.2]", rcpts, 1, BODY);
	/* two results, in either order */
	for (int k = 0; k < 2; k++) {
		struct ipc_hdr h;

		assert_int_equal(recv_frame_ms(f->chan, &h, res, sizeof(res),
		    WAIT_MS), 1);
		assert_int_equal(h.type, RELAY_JOB_RESULT);
		assert_true(h.id == 1 || h.id == 2);
		assert_has(res, "0 D 250 ");
	}
	send_job(f->chan, 3, "[127.0.0.3]", rcpts, 1, BODY);
	recv_result(f, 3, res, sizeof(res));
	assert_has(res, "via [127.0.0.3] 127.0.0.3 none\n0 D 250 ");
	assert_int_equal(srv_count(s, &s->txs), 3);
	/* one QUIT: the idle timer (which would close both) played no part */
	if (srv_count(s, &s->quits) != 1)
		fail_msg("%u QUITs; relay log:\n%s", srv_count(s, &s->quits),
		    read_log(f));
	assert_int_equal(srv_count(s, &s->open_max), 2);
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
}

/* Every address fails at connection level: all recipients deferred with
 * the last reason. */
static void
test_connection_failures_defer(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_GREET421 };
	struct srv *s = srv_start(ip, m, 1);
	const char *rcpts[] = { "a@dest.test", "b@dest.test" };
	char res[4096];
	int fd;
	unsigned dead_port;

	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 5, "[127.0.0.1]", rcpts, 2, BODY);
	recv_result(f, 5, res, sizeof(res));
	assert_has(res, "via - - -\n");
	assert_has(res, "\n0 T 421 4.3.2 busy, try later\n");
	assert_has(res, "\n1 T 421 4.3.2 busy, try later\n");
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);

	/* nothing listening: connection refused */
	fd = listen_on("127.0.0.1", 0, &dead_port);
	close(fd);
	start_relay(f, dead_port);
	send_job(f->chan, 6, "[127.0.0.1]", rcpts, 1, BODY);
	recv_result(f, 6, res, sizeof(res));
	assert_has(res, "via - - -\n0 T 0 4.4.1 connect to [127.0.0.1][127.0.0.1]: ");
	assert_int_equal(stop_relay(f), 0);
}

/* CANCEL while connected to a server that says nothing: no result, the
 * connection goes, the relay stays healthy. */
static void
test_cancel(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_STALL };
	struct srv *s = srv_start(ip, m, 1);
	const char *rcpts[] = { "a@dest.test" };
	struct ipc_hdr h;
	char res[4096];

	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 9, "[127.0.0.1]", rcpts, 1, BODY);
	for (int i = 0; i < 200 && srv_count(s, &s->conns[0]) == 0; i++)
		usleep(10000);
	assert_int_equal(srv_count(s, &s->conns[0]), 1);
	send_frame(f->chan, RELAY_JOB_CANCEL, 9, NULL, 0);
	/* cancel of an unknown (answered) job is fine too */
	send_frame(f->chan, RELAY_JOB_CANCEL, 12345, NULL, 0);
	/* a job still being received, then cancelled */
	send_job(f->chan, 10, "[127.0.0.1]", rcpts, 1, NULL);
	send_frame(f->chan, RELAY_JOB_DATA, 10, "x\r\n", 3);
	send_frame(f->chan, RELAY_JOB_CANCEL, 10, NULL, 0);
	assert_int_equal(recv_frame_ms(f->chan, &h, res, sizeof(res), 300), -1);
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
	assert_has(read_log(f), "relay id=" QID " event=cancelled");
}

/* A body over max_message_size (queued under a larger limit) fails its
 * recipients with 5.3.4; the relay carries on with the next job. */
static void
test_body_over_limit(void **state)
{
	struct fx *f = *state;
	const char *rcpts[] = { "a@dest.test", "b@dest.test" };
	char big[1024], res[4096];

	memset(big, 'a', sizeof(big));
	start_relay(f, 9);
	send_job(f->chan, 3, "dest.test", rcpts, 2, NULL);
	/* 64 KiB + 64 KiB slack: 129 frames of 1 KiB is over */
	for (int k = 0; k < 129; k++)
		send_frame(f->chan, RELAY_JOB_DATA, 3, big, sizeof(big));
	send_frame(f->chan, RELAY_JOB_END, 3, NULL, 0);
	recv_result(f, 3, res, sizeof(res));
	assert_has(res, "via - - -\n0 F 0 5.3.4 message larger than "
	    "max_message_size");
	assert_has(res, "\n1 F 0 5.3.4 ");
	/* the channel is still up: the next job is answered */
	send_job(f->chan, 4, "[127.0.0.1]", rcpts, 1, BODY);
	recv_result(f, 4, res, sizeof(res));
	assert_int_equal(stop_relay(f), 0);
}

/* Protocol violations end the relay with status 1. */
static void
test_violations(void **state)
{
	struct fx *f = *state;
	const char *rcpts[] = { "a@dest.test" };
	struct {
		const char *name;
		int kind;
	} cases[] = {
		{ "data for unknown job", 0 },
		{ "duplicate job id", 1 },
		{ "job id 0", 2 },
		{ "result from the queue", 3 },
		{ "job without domain line", 5 },
		{ "end with payload", 6 },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		start_relay(f, 9);
		switch (cases[i].kind) {
		case 0:
			send_frame(f->chan, RELAY_JOB_DATA, 3, "x", 1);
			break;
		case 1:
			send_job(f->chan, 3, "dest.test", rcpts, 1, NULL);
			send_job(f->chan, 3, "dest.test", rcpts, 1, NULL);
			break;
		case 2:
			send_job(f->chan, 0, "dest.test", rcpts, 1, NULL);
			break;
		case 3:
			send_frame(f->chan, RELAY_JOB_RESULT, 3, "via - - -\n", 10);
			break;
		case 5:
			send_frame(f->chan, RELAY_JOB_START, 3, "version 1\n", 10);
			break;
		case 6:
			send_job(f->chan, 3, "dest.test", rcpts, 1, NULL);
			send_frame(f->chan, RELAY_JOB_END, 3, "x", 1);
			break;
		}
		int status;
		assert_int_equal(waitpid(f->pid, &status, 0), f->pid);
		f->pid = -1;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
			fail_msg("%s: status %d", cases[i].name, status);
		close(f->ctl);
		close(f->chan);
		f->ctl = f->chan = -1;
	}
	assert_has(read_log(f), "relay event=protocol-error");
}

/* A new queue channel (the queue restarted): old jobs are dropped, the
 * new channel works. */
static void
test_channel_replaced(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.1" };
	enum srv_mode m[] = { SRV_ACCEPT };
	struct srv *s = srv_start(ip, m, 1);
	const char *rcpts[] = { "a@dest.test" };
	char res[4096];
	int nc[2];

	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 1, "[127.0.0.1]", rcpts, 1, NULL);   /* never ended */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, nc), 0);
	assert_int_equal(send_ctl(f->ctl, CTL_PEER_FD, nc[1]), 0);
	close(nc[1]);
	close(f->chan);
	f->chan = nc[0];
	/* the same id is new on the new channel */
	send_job(f->chan, 1, "[127.0.0.1]", rcpts, 1, BODY);
	recv_result(f, 1, res, sizeof(res));
	assert_has(res, "0 D 250 ");
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
	assert_has(read_log(f), "event=queue-channel-replaced jobs-dropped=1");
}

/* SIGTERM stops the relay cleanly, with a job in flight. */
static void
test_sigterm(void **state)
{
	struct fx *f = *state;
	const char *rcpts[] = { "a@dest.test" };
	int status;

	start_relay(f, 9);
	send_job(f->chan, 1, "[127.0.0.1]", rcpts, 1, NULL);
	/* wait for ready, so the signal handler is installed */
	for (int i = 0; i < 500 && strstr(read_log(f), "event=ready") == NULL; i++)
		usleep(10000);
	kill(f->pid, SIGTERM);
	assert_int_equal(waitpid(f->pid, &status, 0), f->pid);
	f->pid = -1;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ------------------------------------------------------------------ */
/* with DNS: dnsmasq on 127.0.0.1 */

static bool
start_dnsmasq(struct fx *f)
{
	const char *dnsmasq = "/usr/sbin/dnsmasq";
	char pidarg[128], portarg[32];

	if (access(dnsmasq, X_OK) != 0 || geteuid() != 0)
		return false;
	util_strlcpy(f->dnsdir, "/tmp/tern-relay-dns-XXXXXX", sizeof(f->dnsdir));
	assert_non_null(mkdtemp(f->dnsdir));
	snprintf(pidarg, sizeof(pidarg), "--pid-file=%s/pid", f->dnsdir);
	for (int tries = 0; tries < 10; tries++) {
		unsigned port;
		int fd = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in sin = { .sin_family = AF_INET };
		socklen_t sl = sizeof(sin);
		int status;

		inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
		bind(fd, (struct sockaddr *)&sin, sizeof(sin));
		getsockname(fd, (struct sockaddr *)&sin, &sl);
		port = ntohs(sin.sin_port);
		close(fd);
		snprintf(portarg, sizeof(portarg), "--port=%u", port);
		fflush(NULL);
		f->dnsmasq = fork();
		assert_true(f->dnsmasq >= 0);
		if (f->dnsmasq == 0) {
			int null = open("/dev/null", O_RDWR);

			dup2(null, 1);
			dup2(null, 2);
			execl(dnsmasq, dnsmasq, "-k", portarg,
			    "--listen-address=127.0.0.1", "--bind-interfaces",
			    "--no-resolv", "--no-hosts", "--local=/test/",
			    pidarg, "--user=root",
			    "--mx-host=two.test,mx1.two.test,10",
			    "--mx-host=two.test,mx2.two.test,20",
			    "--host-record=mx1.two.test,127.0.0.2",
			    "--host-record=mx2.two.test,127.0.0.3",
			    "--mx-host=equal.test,mx1.equal.test,10",
			    "--mx-host=equal.test,mx2.equal.test,10",
			    "--host-record=mx1.equal.test,127.0.0.2",
			    "--host-record=mx2.equal.test,127.0.0.3",
			    "--mx-host=nullmx.test,.,0",
			    (char *)NULL);
			_exit(127);
		}
		usleep(300000);
		if (waitpid(f->dnsmasq, &status, WNOHANG) == 0) {
			snprintf(f->resolver, sizeof(f->resolver),
			    "127.0.0.1:%u", port);
			return true;
		}
		f->dnsmasq = -1;
	}
	return false;
}

/* The first MX greets with 421: the second one takes the message
 * (RFC 5321 5.1). Null MX and NXDOMAIN fail at once. */
static void
test_mx(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.2", "127.0.0.3" };
	enum srv_mode m[] = { SRV_GREET421, SRV_ACCEPT };
	const char *rcpts[] = { "a@two.test", "b@two.test" };
	char res[4096];
	struct srv *s;

	if (!start_dnsmasq(f))
		skip();
	free(f->cfg->resolver);
	f->cfg->resolver = xstrdup(f->resolver);
	s = srv_start(ip, m, 2);
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	send_job(f->chan, 1, "two.test", rcpts, 2, BODY);
	recv_result(f, 1, res, sizeof(res));
	assert_has(res, "via mx2.two.test 127.0.0.3 none\n0 D 250 2.0.0 ");
	assert_has(res, "\n1 D 250 2.0.0 ");
	assert_int_equal(srv_count(s, &s->conns[0]), 1);
	assert_int_equal(srv_count(s, &s->conns[1]), 1);

	send_job(f->chan, 2, "nullmx.test", rcpts, 1, BODY);
	recv_result(f, 2, res, sizeof(res));
	assert_has(res, "via - - -\n0 F 556 5.1.10 ");

	send_job(f->chan, 3, "nosuch.test", rcpts, 2, BODY);
	recv_result(f, 3, res, sizeof(res));
	assert_has(res, "via - - -\n0 F 0 5.1.2 ");
	assert_has(res, "\n1 F 0 5.1.2 ");

	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
	char *log = read_log(f);
	assert_has(log, "event=attempt-failed mx=mx1.two.test ip=127.0.0.2");
	assert_has(log, "rcpt=a@two.test mx=mx2.two.test ip=127.0.0.3 tls=none");
}

/* Two MX hosts of equal preference (RFC 5321 5.1: tried in random order,
 * so they share the load), 20 jobs one after another with connections
 * cached far longer than the run takes: both hosts get messages, each on
 * one connection that the later jobs picking it reuse; none is lost or
 * sent twice. All 20 to one host would happen once in 2^19 runs. */
static void
test_equal_mx_share(void **state)
{
	struct fx *f = *state;
	const char *ip[] = { "127.0.0.2", "127.0.0.3" };
	enum srv_mode m[] = { SRV_ACCEPT, SRV_ACCEPT };
	const char *rcpts[] = { "a@equal.test" };
	char res[4096];
	struct srv *s;
	unsigned n = 20;

	if (!start_dnsmasq(f))
		skip();
	free(f->cfg->resolver);
	f->cfg->resolver = xstrdup(f->resolver);
	f->cfg->relay_connection_reuse_time = 300;
	s = srv_start(ip, m, 2);
	start_relay(f, s->port);   /* fork before the server's threads */
	srv_run(s);
	for (uint64_t id = 1; id <= n; id++) {
		send_job(f->chan, id, "equal.test", rcpts, 1, BODY);
		recv_result(f, id, res, sizeof(res));
		assert_has(res, "0 D 250 2.0.0 ");
	}
	assert_int_equal(srv_count(s, &s->txs), n);
	if (srv_count(s, &s->txs_at[0]) == 0 ||
	    srv_count(s, &s->txs_at[1]) == 0)
		fail_msg("all %u messages went to one of two equal MX hosts "
		    "(%u, %u); relay log:\n%s", n, srv_count(s, &s->txs_at[0]),
		    srv_count(s, &s->txs_at[1]), read_log(f));
	assert_int_equal(srv_count(s, &s->conns[0]), 1);
	assert_int_equal(srv_count(s, &s->conns[1]), 1);
	assert_int_equal(stop_relay(f), 0);
	srv_stop(s);
	assert_has(read_log(f), " event=conn-reuse mx=mx");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_per_recipient_results, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_failures_defer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_over_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_violations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_channel_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_equal_mx_share, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
