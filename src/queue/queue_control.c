/*
 * queue_control.c - `tern queue ...` (see queue_control.h).
 *
 * Server: the control socket of the queue process, on its loop. One
 * request line per connection, one JSON document back, then close. The
 * queue's side (list, flush, and the tasks that show, hold, release and
 * delete) is behind the struct queue_control_ops it was given
 * (queue_admin.c); this file owns the socket, the line protocol, the peer
 * check and the JSON, and knows nothing of struct queue.
 *
 * Client: connect, send the line, read the whole answer (bounded), print
 * it as received (--json) or parse it with the small JSON reader below
 * and print a table.
 */
#include <errno.h>
#include <inttypes.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf/config.h"
#include "lib/conn.h"
#include "lib/log.h"
#include "proto/control_line.h"
#include "queue/queue_control.h"
#include "queue/spool.h"
#include "lib/utf8.h"
#include "lib/util.h"

#define LIST_CHUNK 256                    /* entries formatted per write */
#define OUT_LOW (64 * 1024)               /* refill the list below this */
#define CLIENT_ANSWER_MAX (512u << 20)    /* what the CLI reads at most */
#define JSON_DEPTH_MAX 16

/* ---- JSON output ---- */

void
queue_control_json_str(struct evbuffer *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n;

	if (s == NULL) {
		evbuffer_add(out, "null", 4);
		return;
	}
	n = strlen(s);
	evbuffer_add(out, "\"", 1);
	while (n > 0) {
		uint32_t cp;
		size_t k = utf8_decode(p, n, &cp);

		if (k == 0) {
			evbuffer_add(out, "\\ufffd", 6);
			k = 1;
		} else if (*p == '"' || *p == '\\') {
			evbuffer_add_printf(out, "\\%c", *p);
		} else if (*p < 0x20 || *p == 0x7f) {
			evbuffer_add_printf(out, "\\u%04x", *p);
		} else {
			evbuffer_add(out, p, k);
		}
		p += k;
		n -= k;
	}
	evbuffer_add(out, "\"", 1);
}

static void
json_key(struct evbuffer *out, const char *key, bool first)
{
	evbuffer_add_printf(out, "%s\"%s\":", first ? "" : ",", key);
}

static void
json_kstr(struct evbuffer *out, const char *key, const char *val)
{
	json_key(out, key, false);
	queue_control_json_str(out, val);
}

static const char *
rcpt_state_name(enum spool_rcpt_state s)
{
	switch (s) {
	case SPOOL_RCPT_PENDING:
		return "pending";
	case SPOOL_RCPT_DEFERRED:
		return "deferred";
	case SPOOL_RCPT_DELIVERED:
		return "delivered";
	case SPOOL_RCPT_FAILED:
		return "failed";
	}
	return "unknown";
}

char *
queue_control_show_json(struct spool_msg *m)
{
	const struct envelope *env = spool_msg_envelope(m);
	struct evbuffer *out = evbuffer_new();
	size_t body_len, len;
	int64_t since = 0;
	bool held = spool_msg_held(m, &since);
	char *s;

	if (out == NULL)
		fatal("out of memory");
	(void)spool_msg_body(m, &body_len);
	json_key(out, "id", true);
	queue_control_json_str(out, spool_msg_id(m));
	evbuffer_add_printf(out, ",\"arrival\":%" PRId64 ",\"size\":%zu",
	    env->arrival, body_len);
	json_kstr(out, "sender", env->sender);
	json_kstr(out, "helo", env->helo);
	json_kstr(out, "client", env->client_addr);
	json_kstr(out, "protocol", env->protocol);
	json_kstr(out, "body", env->body == ENVELOPE_BODY_8BITMIME ? "8BITMIME" :
	    env->body == ENVELOPE_BODY_7BIT ? "7BIT" : NULL);
	evbuffer_add_printf(out, ",\"smtputf8\":%s",
	    env->smtputf8 ? "true" : "false");
	json_kstr(out, "ret", env->ret == ENVELOPE_RET_FULL ? "FULL" :
	    env->ret == ENVELOPE_RET_HDRS ? "HDRS" : NULL);
	json_kstr(out, "envid", env->envid);
	if (held)
		evbuffer_add_printf(out, ",\"held_since\":%" PRId64, since);
	else
		evbuffer_add_printf(out, ",\"held_since\":null");
	evbuffer_add_printf(out, ",\"recipients\":[");
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct envelope_rcpt *r = &env->rcpts[i];
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);

		evbuffer_add_printf(out, "%s{\"index\":%zu", i ? "," : "", i);
		json_kstr(out, "address", r->addr);
		json_kstr(out, "orcpt", r->orcpt);
		json_kstr(out, "state", rcpt_state_name(st->state));
		evbuffer_add_printf(out, ",\"attempts\":%u", st->attempts);
		if (st->state == SPOOL_RCPT_DEFERRED)
			evbuffer_add_printf(out, ",\"next_attempt\":%" PRId64,
			    st->next_attempt);
		else
			evbuffer_add_printf(out, ",\"next_attempt\":null");
		json_kstr(out, "reply", st->reply);
		evbuffer_add(out, "}", 1);
	}
	evbuffer_add(out, "]", 1);
	len = evbuffer_get_length(out);
	s = xmalloc(len + 1);
	evbuffer_remove(out, s, len);
	s[len] = '\0';
	evbuffer_free(out);
	return s;
}

static const char *
state_name(enum queue_control_state s)
{
	return s == QUEUE_CONTROL_STATE_HELD ? "held" : s == QUEUE_CONTROL_STATE_DEFERRED ?
	    "deferred" : "active";
}

/* The in-memory fields of e, as object members (leading comma). */
static void
entry_json(struct evbuffer *out, const struct queue_control_entry *e)
{
	json_kstr(out, "state", state_name(e->state));
	if (e->next != 0 && e->state != QUEUE_CONTROL_STATE_HELD)
		evbuffer_add_printf(out, ",\"next_attempt\":%" PRId64, e->next);
	else
		evbuffer_add_printf(out, ",\"next_attempt\":null");
	evbuffer_add_printf(out, ",\"pending\":%u", e->npending);
}

/* ---- server ---- */

struct qc_client {
	struct qc_client *prev, *next;
	struct queue_control *qc;
	struct bufferevent *bev;
	struct event *reap_ev;
	bool pending;              /* a queue task will call back */
	bool closing;              /* answered: close once written */
	bool dead;                 /* closed; freed by reap_ev */
	char id[QUEUE_ID_LEN + 1];
	enum control_line_verb verb;
	struct queue_control_entry *ents;   /* list being streamed */
	size_t nents, pos;
};

struct queue_control {
	char *path;
	int fd;
	struct event *ev;
	struct event_base *base;
	const struct queue_control_ops *ops;
	void *arg;                 /* for ops */
	struct qc_client *clients;
	size_t nclients;
};

struct queue_control *
queue_control_new(const char *spool_dir, uid_t uid, gid_t gid,
    const struct queue_control_ops *ops, void *arg, char *err, size_t errsize)
{
	struct queue_control *qc;
	struct sockaddr_un sun;
	int n;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s", spool_dir,
	    QUEUE_CONTROL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
		snprintf(err, errsize, "control socket path %s/%s too long (%zu max)",
		    spool_dir, QUEUE_CONTROL_SOCKET, sizeof(sun.sun_path) - 1);
		return NULL;
	}
	qc = xcalloc(1, sizeof(*qc));
	qc->path = xstrdup(sun.sun_path);
	qc->ops = ops;
	qc->arg = arg;
	qc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (qc->fd == -1) {
		snprintf(err, errsize, "control socket: %s", strerror(errno));
		goto fail;
	}
	/* A stale socket from a previous run (crash) would make bind fail. */
	if (unlink(qc->path) == -1 && errno != ENOENT) {
		snprintf(err, errsize, "remove stale %s: %s", qc->path,
		    strerror(errno));
		goto fail;
	}
	{
		/* Mode 0600 from the start: no window where others may connect. */
		mode_t old = umask(0177);
		int r = bind(qc->fd, (struct sockaddr *)&sun, sizeof(sun));
		int e = errno;

		umask(old);
		if (r == -1) {
			snprintf(err, errsize, "bind %s: %s", qc->path, strerror(e));
			goto fail;
		}
	}
	if (chmod(qc->path, 0600) == -1 ||
	    ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
	    chown(qc->path, uid, gid) == -1)) {
		snprintf(err, errsize, "%s: %s", qc->path, strerror(errno));
		goto fail;
	}
	if (listen(qc->fd, QUEUE_CONTROL_MAX_CLIENTS) == -1) {
		snprintf(err, errsize, "listen %s: %s", qc->path, strerror(errno));
		goto fail;
	}
	return qc;
fail:
	queue_control_free(&qc);
	return NULL;
}

static void
client_reap_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct qc_client *c = arg;
	struct queue_control *qc = c->qc;

	if (c->pending)
		return;   /* the task's callback reaps it */
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		qc->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	qc->nclients--;
	for (size_t i = c->pos; i < c->nents; i++)
		free(c->ents[i].sender);
	free(c->ents);
	{
		/* Closing with unread input resets the connection, and the
		 * peer may lose our answer: read a little of what is left. */
		char junk[1024];
		int sfd = bufferevent_getfd(c->bev);

		for (int k = 0; sfd != -1 && k < 4 &&
		    read(sfd, junk, sizeof(junk)) > 0; k++)
			;
	}
	bufferevent_free(c->bev);
	event_free(c->reap_ev);
	free(c);
}

/* Close c: freed from a fresh callback, never from inside its own, and
 * only once no queue task will call back for it. */
static void
client_close(struct qc_client *c)
{
	struct timeval now = { 0, 0 };

	if (!c->dead) {
		c->dead = true;
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	}
	if (!c->pending)
		evtimer_add(c->reap_ev, &now);
}

/* The answer is complete once what is in the output buffer is written. */
static void
client_finish(struct qc_client *c)
{
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		client_close(c);
}

static void
client_error(struct qc_client *c, const char *error)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	evbuffer_add_printf(out, "{\"ok\":false");
	json_kstr(out, "error", error);
	if (c->id[0] != '\0')
		json_kstr(out, "id", c->id);
	evbuffer_add_printf(out, "}\n");
	client_finish(c);
}

/* Format the next chunk of a list answer; the end closes it. */
static void
list_more(struct qc_client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t end = c->pos + LIST_CHUNK < c->nents ? c->pos + LIST_CHUNK :
	    c->nents;

	for (; c->pos < end; c->pos++) {
		struct queue_control_entry *e = &c->ents[c->pos];

		evbuffer_add_printf(out, "%s{", c->pos ? "," : "");
		json_key(out, "id", true);
		queue_control_json_str(out, e->id);
		evbuffer_add_printf(out, ",\"arrival\":%" PRId64
		    ",\"size_kib\":%" PRIu32 ",\"recipients\":%u",
		    spool_id_time_us(e->id) / 1000000, e->size_kib, e->nrcpt);
		json_kstr(out, "sender", e->sender);
		entry_json(out, e);
		evbuffer_add(out, "}", 1);
		free(e->sender);
		e->sender = NULL;
	}
	if (c->pos == c->nents) {
		free(c->ents);
		c->ents = NULL;
		c->nents = c->pos = 0;
		evbuffer_add_printf(out, "]}\n");
		client_finish(c);
	}
}

/* A show/hold/release/delete finished (the queue's ops call this). */
static void
task_cb(void *arg, int status, char *json, const struct queue_control_entry *e)
{
	struct qc_client *c = arg;
	struct evbuffer *out;

	c->pending = false;
	if (c->dead) {
		free(json);
		client_close(c);
		return;
	}
	out = bufferevent_get_output(c->bev);
	bufferevent_enable(c->bev, EV_WRITE);
	switch (status) {
	case QUEUE_CONTROL_OK:
		evbuffer_add_printf(out, "{\"ok\":true");
		if (c->verb == CONTROL_LINE_SHOW && json != NULL) {
			evbuffer_add_printf(out, ",\"message\":{%s", json);
			if (e != NULL)
				entry_json(out, e);
			evbuffer_add(out, "}", 1);
		} else {
			json_kstr(out, "id", c->id);
			json_kstr(out, "action", c->verb == CONTROL_LINE_HOLD ?
			    "held" : c->verb == CONTROL_LINE_RELEASE ? "released" :
			    c->verb == CONTROL_LINE_DELETE ? "deleted" : "shown");
		}
		evbuffer_add_printf(out, "}\n");
		client_finish(c);
		break;
	case QUEUE_CONTROL_NOTFOUND:
		client_error(c, "not found");
		break;
	default:
		client_error(c, "failed (see the log), or the queue is stopping");
		break;
	}
	free(json);
}

static void
client_request(struct qc_client *c, const char *line, size_t len)
{
	struct queue_control *qc = c->qc;
	struct control_line req;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *why;
	enum queue_control_op op;
	int r;

	bufferevent_disable(c->bev, EV_READ);
	if (control_line_parse(line, len, &req, &why) == -1) {
		char msg[160];

		snprintf(msg, sizeof(msg), "bad request: %s", why);
		client_error(c, msg);
		return;
	}
	c->verb = req.verb;
	memcpy(c->id, req.id, sizeof(c->id));
	switch (req.verb) {
	case CONTROL_LINE_LIST:
		c->nents = qc->ops->list(qc->arg, &c->ents);
		evbuffer_add_printf(out, "{\"ok\":true,\"now\":%" PRId64
		    ",\"count\":%zu,\"messages\":[", (int64_t)time(NULL), c->nents);
		list_more(c);
		return;
	case CONTROL_LINE_FLUSH: {
		long n = qc->ops->flush(qc->arg, req.id[0] ? req.id : NULL);

		if (n == -QUEUE_CONTROL_NOTFOUND) {
			client_error(c, "not found");
			return;
		}
		if (n == -QUEUE_CONTROL_HELD_ALREADY) {
			client_error(c, "held: release it instead");
			return;
		}
		log_info("queue event=flush by=admin id=%s messages=%ld",
		    req.id[0] ? req.id : "all", n);
		evbuffer_add_printf(out, "{\"ok\":true,\"flushed\":%ld}\n", n);
		client_finish(c);
		return;
	}
	case CONTROL_LINE_SHOW:
		op = QUEUE_CONTROL_OP_SHOW;
		break;
	case CONTROL_LINE_HOLD:
		op = QUEUE_CONTROL_OP_HOLD;
		break;
	case CONTROL_LINE_RELEASE:
		op = QUEUE_CONTROL_OP_RELEASE;
		break;
	case CONTROL_LINE_DELETE:
	default:
		op = QUEUE_CONTROL_OP_DELETE;
		break;
	}
	r = qc->ops->start(qc->arg, req.id, op, task_cb, c);
	if (r == QUEUE_CONTROL_OK)
		c->pending = true;
	else if (r == QUEUE_CONTROL_NOTFOUND)
		client_error(c, "not found");
	else
		client_error(c, "the queue is stopping");
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	struct qc_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[CONTROL_LINE_MAX];
	size_t rawlen;

	if (c->dead || c->closing || c->pending)
		return;
	/* one line of at most CONTROL_LINE_MAX octets, its LF included */
	switch (conn_line(in, CONTROL_LINE_MAX, &rawlen)) {
	case CONN_LINE_MORE:
		return;
	case CONN_LINE_TOO_LONG:
		client_error(c, "bad request: request line too long");
		return;
	case CONN_LINE_OK:
		break;
	}
	evbuffer_remove(in, line, rawlen);
	client_request(c, line, rawlen - 1);
}

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct qc_client *c = arg;

	if (c->dead)
		return;
	if (c->ents != NULL) {
		list_more(c);
		return;
	}
	if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		client_close(c);
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct qc_client *c = arg;

	/* EOF before a complete line, an error, or the idle timeout. */
	if (what & BEV_EVENT_TIMEOUT)
		log_info("queue event=control-timeout");
	client_close(c);
}

static bool
peer_allowed(int fd, uid_t *uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
	    len != sizeof(cred)) {
		*uid = (uid_t)-1;
		return false;
	}
	*uid = cred.uid;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void
accept_cb(evutil_socket_t lfd, short ev, void *arg)
{
	struct queue_control *qc = arg;

	for (int k = 0; k < QUEUE_CONTROL_MAX_CLIENTS; k++) {
		struct timeval tmo = { QUEUE_CONTROL_TIMEOUT, 0 };
		struct qc_client *c;
		uid_t uid;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_warn("queue event=control-accept error=\"%s\"",
				    strerror(errno));
			return;
		}
		if (qc->nclients >= QUEUE_CONTROL_MAX_CLIENTS) {
			log_warn("queue event=control-refused reason=\"too many clients\"");
			close(fd);
			continue;
		}
		c = xcalloc(1, sizeof(*c));
		c->qc = qc;
		c->bev = bufferevent_socket_new(qc->base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->reap_ev = evtimer_new(qc->base, client_reap_cb, c);
		if (c->bev == NULL || c->reap_ev == NULL)
			fatal("queue: control client setup failed");
		c->next = qc->clients;
		if (qc->clients != NULL)
			qc->clients->prev = c;
		qc->clients = c;
		qc->nclients++;
		bufferevent_setcb(c->bev, client_read_cb, client_write_cb,
		    client_event_cb, c);
		bufferevent_setwatermark(c->bev, EV_READ, 0, CONTROL_LINE_MAX);
		bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
		bufferevent_set_timeouts(c->bev, &tmo, &tmo);
		if (!peer_allowed(fd, &uid)) {
			log_warn("queue event=control-refused uid=%ld reason=\"not root or the queue user\"",
			    (long)uid);
			bufferevent_enable(c->bev, EV_WRITE);
			client_error(c, "permission denied");
			continue;
		}
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	}
}

void
queue_control_start(struct queue_control *qc, struct event_base *base)
{
	qc->base = base;
	qc->ev = event_new(base, qc->fd, EV_READ | EV_PERSIST, accept_cb, qc);
	if (qc->ev == NULL)
		fatal("queue: event_new failed");
	event_add(qc->ev, NULL);
}

void
queue_control_stop(struct queue_control *qc)
{
	if (qc == NULL || qc->fd == -1)
		return;
	if (qc->ev != NULL)
		event_del(qc->ev);
	close(qc->fd);
	qc->fd = -1;
	/* The CLI then says "not running" rather than hanging. */
	if (unlink(qc->path) == -1 && errno != ENOENT)
		log_warn("queue event=control-unlink error=\"%s\"", strerror(errno));
}

void
queue_control_free(struct queue_control **qcp)
{
	struct queue_control *qc = *qcp;

	if (qc == NULL)
		return;
	if (qc->ev != NULL) {
		queue_control_stop(qc);
		event_free(qc->ev);
	} else if (qc->fd != -1) {
		close(qc->fd);   /* never started (queue_new failed) */
	}
	while (qc->clients != NULL) {
		struct qc_client *c = qc->clients;

		c->pending = false;
		client_reap_cb(-1, 0, c);
	}
	free(qc->path);
	free(qc);
	*qcp = NULL;
}

/* ---- client: a small JSON reader ---- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype t;
	bool b;
	double num;
	char *s;                /* J_STR */
	struct jval *items;     /* J_ARR, J_OBJ values */
	char **keys;            /* J_OBJ */
	size_t n;
};

struct jparse {
	const char *p, *end;
	int depth;
};

static void
jfree(struct jval *v)
{
	for (size_t i = 0; i < v->n; i++) {
		jfree(&v->items[i]);
		if (v->keys != NULL)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->s);
	memset(v, 0, sizeof(*v));
}

static void
jws(struct jparse *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
	    *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int
hex4(const char *p, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	return 0;
}

static int
jstring(struct jparse *j, char **out)
{
	struct evbuffer *b;
	size_t len;

	if (j->p >= j->end || *j->p != '"')
		return -1;
	j->p++;
	b = evbuffer_new();
	if (b == NULL)
		fatal("out of memory");
	while (j->p < j->end && *j->p != '"') {
		char c = *j->p++;
		unsigned cp;

		if (c != '\\') {
			evbuffer_add(b, &c, 1);
			continue;
		}
		if (j->p >= j->end)
			goto bad;
		c = *j->p++;
		switch (c) {
		case 'n': c = '\n'; break;
		case 't': c = '\t'; break;
		case 'r': c = '\r'; break;
		case 'b': c = '\b'; break;
		case 'f': c = '\f'; break;
		case '"': case '\\': case '/': break;
		case 'u':
			if (j->end - j->p < 4 || hex4(j->p, &cp) == -1)
				goto bad;
			j->p += 4;
			/* Only what the server writes: no surrogate pairs. */
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			if (cp < 0x80) {
				c = (char)cp;
				break;
			}
			if (cp < 0x800)
				evbuffer_add_printf(b, "%c%c", 0xc0 | (cp >> 6),
				    0x80 | (cp & 0x3f));
			else
				evbuffer_add_printf(b, "%c%c%c", 0xe0 | (cp >> 12),
				    0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
			continue;
		default:
			goto bad;
		}
		evbuffer_add(b, &c, 1);
	}
	if (j->p >= j->end)
		goto bad;
	j->p++;
	len = evbuffer_get_length(b);
	*out = xmalloc(len + 1);
	evbuffer_remove(b, *out, len);
	(*out)[len] = '\0';
	evbuffer_free(b);
	return 0;
bad:
	evbuffer_free(b);
	return -1;
}

static int
jvalue(struct jparse *j, struct jval *v)
{
	memset(v, 0, sizeof(*v));
	jws(j);
	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '"':
		v->t = J_STR;
		return jstring(j, &v->s);
	case '{':
	case '[': {
		bool obj = *j->p == '{';
		size_t cap = 0;

		if (++j->depth > JSON_DEPTH_MAX)
			return -1;
		v->t = obj ? J_OBJ : J_ARR;
		j->p++;
		jws(j);
		if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
			j->p++;
			j->depth--;
			return 0;
		}
		for (;;) {
			char *key = NULL;

			if (v->n == cap) {
				cap = cap ? cap * 2 : 8;
				v->items = xreallocarray(v->items, cap,
				    sizeof(*v->items));
				if (obj)
					v->keys = xreallocarray(v->keys, cap,
					    sizeof(*v->keys));
			}
			if (obj) {
				jws(j);
				if (jstring(j, &key) == -1)
					return -1;
				jws(j);
				if (j->p >= j->end || *j->p++ != ':') {
					free(key);
					return -1;
				}
				v->keys[v->n] = key;
			}
			if (jvalue(j, &v->items[v->n]) == -1) {
				v->n++;   /* freed by jfree */
				return -1;
			}
			v->n++;
			jws(j);
			if (j->p < j->end && *j->p == ',') {
				j->p++;
				continue;
			}
			if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
				j->p++;
				j->depth--;
				return 0;
			}
			return -1;
		}
	}
	case 't':
	case 'f':
	case 'n': {
		static const char *const words[] = { "true", "false", "null" };

		for (size_t i = 0; i < nitems(words); i++) {
			size_t n = strlen(words[i]);

			if ((size_t)(j->end - j->p) >= n &&
			    memcmp(j->p, words[i], n) == 0) {
				j->p += n;
				v->t = i == 2 ? J_NULL : J_BOOL;
				v->b = i == 0;
				return 0;
			}
		}
		return -1;
	}
	default: {
		char buf[64], *e;
		size_t n = 0;

		while (j->p + n < j->end && n < sizeof(buf) - 1 &&
		    strchr("+-0123456789.eE", j->p[n]) != NULL)
			n++;
		if (n == 0)
			return -1;
		memcpy(buf, j->p, n);
		buf[n] = '\0';
		v->num = strtod(buf, &e);
		if (*e != '\0')
			return -1;
		v->t = J_NUM;
		j->p += n;
		return 0;
	}
	}
}

/* Parse the whole of (p, len) as one JSON value. -1 if it is not. */
static int
jparse_doc(const char *p, size_t len, struct jval *v)
{
	struct jparse j = { p, p + len, 0 };

	if (jvalue(&j, v) == -1) {
		jfree(v);
		return -1;
	}
	jws(&j);
	if (j.p != j.end) {
		jfree(v);
		return -1;
	}
	return 0;
}

static const struct jval *
jget(const struct jval *o, const char *key)
{
	if (o == NULL || o->t != J_OBJ)
		return NULL;
	for (size_t i = 0; i < o->n; i++)
		if (strcmp(o->keys[i], key) == 0)
			return &o->items[i];
	return NULL;
}

static const char *
jstr(const struct jval *o, const char *key)
{
	const struct jval *v = jget(o, key);

	return v != NULL && v->t == J_STR ? v->s : NULL;
}

/* A number member, or -1 when absent, null, or beyond int64_t (a cast
 * of such a double is undefined: 1e300 crashed the UBSan build). */
static int64_t
jnum(const struct jval *o, const char *key)
{
	const struct jval *v = jget(o, key);

	if (v == NULL || v->t != J_NUM ||
	    !(v->num > -9.0e18 && v->num < 9.0e18))
		return -1;
	return (int64_t)v->num;
}

/* ---- client: output for people ---- */

static const char *
iso_time(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		util_strlcpy(buf, "-", size);
	return buf;
}

static void
print_list(const struct jval *doc, FILE *out)
{
	const struct jval *msgs = jget(doc, "messages");
	size_t n = msgs != NULL && msgs->t == J_ARR ? msgs->n : 0;

	fprintf(out, "%-16s  %-20s  %7s  %-32s  %-9s  %-20s  %s\n", "ID",
	    "ARRIVAL", "SIZE", "SENDER", "RCPTS", "NEXT ATTEMPT", "STATE");
	for (size_t i = 0; i < n; i++) {
		const struct jval *m = &msgs->items[i];
		const char *sender = jstr(m, "sender");
		const char *state = jstr(m, "state");
		char a[32], nx[32], size[32], rc[32], snd[300];
		int64_t kib = jnum(m, "size_kib");
		int64_t total = jnum(m, "recipients");

		if (kib <= 0)
			util_strlcpy(size, "-", sizeof(size));
		else if (kib < 10240)
			snprintf(size, sizeof(size), "%" PRId64 "K", kib);
		else
			snprintf(size, sizeof(size), "%" PRId64 "M", (kib + 1023) / 1024);
		if (total <= 0)
			util_strlcpy(rc, "-", sizeof(rc));
		else
			snprintf(rc, sizeof(rc), "%" PRId64 "/%" PRId64,
			    jnum(m, "pending"), total);
		if (sender == NULL)
			util_strlcpy(snd, "?", sizeof(snd));
		else
			snprintf(snd, sizeof(snd), "<%s>", sender);
		fprintf(out, "%-16s  %-20s  %7s  %-32s  %-9s  %-20s  %s\n",
		    jstr(m, "id") ? jstr(m, "id") : "?",
		    iso_time(jnum(m, "arrival"), a, sizeof(a)), size, snd, rc,
		    state != NULL && strcmp(state, "held") == 0 ? "-" :
		    iso_time(jnum(m, "next_attempt"), nx, sizeof(nx)),
		    state != NULL ? state : "?");
	}
	fprintf(out, "%zu message%s\n", n, n == 1 ? "" : "s");
}

static void
print_field(FILE *out, const char *name, const char *val)
{
	if (val != NULL)
		fprintf(out, "%-13s %s\n", name, val);
}

static void
print_show(const struct jval *doc, FILE *out)
{
	const struct jval *m = jget(doc, "message");
	const struct jval *rcpts = jget(m, "recipients");
	const char *state = jstr(m, "state");
	char buf[64], line[400];
	size_t n = rcpts != NULL && rcpts->t == J_ARR ? rcpts->n : 0;

	print_field(out, "id:", jstr(m, "id"));
	print_field(out, "arrival:", iso_time(jnum(m, "arrival"), buf, sizeof(buf)));
	snprintf(line, sizeof(line), "%" PRId64 " octets", jnum(m, "size"));
	print_field(out, "size:", line);
	snprintf(line, sizeof(line), "<%s>", jstr(m, "sender") ? jstr(m, "sender") : "");
	print_field(out, "sender:", line);
	print_field(out, "client:", jstr(m, "client"));
	print_field(out, "helo:", jstr(m, "helo"));
	print_field(out, "protocol:", jstr(m, "protocol"));
	print_field(out, "body:", jstr(m, "body"));
	print_field(out, "ret:", jstr(m, "ret"));
	print_field(out, "envid:", jstr(m, "envid"));
	if (state != NULL && strcmp(state, "held") == 0)
		snprintf(line, sizeof(line), "held since %s",
		    iso_time(jnum(m, "held_since"), buf, sizeof(buf)));
	else if (state != NULL && jnum(m, "next_attempt") > 0)
		snprintf(line, sizeof(line), "%s, next attempt %s", state,
		    iso_time(jnum(m, "next_attempt"), buf, sizeof(buf)));
	else
		snprintf(line, sizeof(line), "%s", state != NULL ? state : "?");
	print_field(out, "state:", line);
	fprintf(out, "recipients:   %zu\n", n);
	for (size_t i = 0; i < n; i++) {
		const struct jval *r = &rcpts->items[i];
		const char *rs = jstr(r, "state");
		const char *reply = jstr(r, "reply");

		fprintf(out, "  <%s>  %s", jstr(r, "address") ? jstr(r, "address") : "?",
		    rs != NULL ? rs : "?");
		if (jnum(r, "attempts") > 0)
			fprintf(out, "  attempts=%" PRId64, jnum(r, "attempts"));
		if (jnum(r, "next_attempt") > 0)
			fprintf(out, "  next=%s",
			    iso_time(jnum(r, "next_attempt"), buf, sizeof(buf)));
		fputc('\n', out);
		if (reply != NULL)
			fprintf(out, "      last reply: %s\n", reply);
	}
}

/* ---- client: the exchange ---- */

int
queue_control_answer(const char *p, size_t len,
    const struct control_line *req, bool json, FILE *out, FILE *err)
{
	struct jval doc;
	const struct jval *ok;
	int rc;

	if (jparse_doc(p, len, &doc) == -1 || doc.t != J_OBJ) {
		jfree(&doc);   /* zeroed already when it did not parse */
		fprintf(err, "tern queue: malformed answer from tern\n");
		return 1;
	}
	ok = jget(&doc, "ok");
	rc = ok != NULL && ok->t == J_BOOL && ok->b ? 0 : 1;
	if (json) {
		fwrite(p, 1, len, out);
	} else if (rc != 0) {
		const char *e = jstr(&doc, "error");
		const char *id = jstr(&doc, "id");

		fprintf(err, "tern queue: %s%s%s\n", id != NULL ? id : "",
		    id != NULL ? ": " : "", e != NULL ? e : "failed");
	} else {
		switch (req->verb) {
		case CONTROL_LINE_LIST:
			print_list(&doc, out);
			break;
		case CONTROL_LINE_SHOW:
			print_show(&doc, out);
			break;
		case CONTROL_LINE_FLUSH:
			fprintf(out, "%" PRId64 " message%s flushed\n",
			    jnum(&doc, "flushed"), jnum(&doc, "flushed") == 1 ? "" : "s");
			break;
		default:
			fprintf(out, "%s: %s\n", req->id, jstr(&doc, "action") ?
			    jstr(&doc, "action") : "done");
			break;
		}
	}
	jfree(&doc);
	return rc;
}

int
queue_control_client(const struct config *cfg, int argc, char **argv,
    bool json, FILE *out)
{
	struct sockaddr_un sun;
	struct timeval tmo = { 120, 0 };
	struct control_line req;
	struct evbuffer *ans;
	char line[CONTROL_LINE_MAX + 1];
	const char *why;
	size_t len;
	int fd, n, rc;

	if (argc < 1 || argc > 2) {
		fprintf(stderr, "usage: tern queue list|show ID|flush [ID]|delete ID|hold ID|release ID [--json] [-c FILE]\n");
		return 64;
	}
	n = snprintf(line, sizeof(line), "%s%s%s", argv[0], argc > 1 ? " " : "",
	    argc > 1 ? argv[1] : "");
	if (n < 0 || (size_t)n >= sizeof(line) ||
	    control_line_parse(line, (size_t)n, &req, &why) == -1) {
		fprintf(stderr, "tern queue: %s\n", n < 0 ||
		    (size_t)n >= sizeof(line) ? "request too long" : why);
		return 64;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s",
	    cfg->spool_dir, QUEUE_CONTROL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
		fprintf(stderr, "tern queue: control socket path too long\n");
		return 1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		fprintf(stderr, "tern queue: socket: %s\n", strerror(errno));
		return 1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;

		close(fd);
		if (e == EACCES || e == EPERM) {
			fprintf(stderr, "tern queue: %s: permission denied (root or the queue user only)\n",
			    sun.sun_path);
			return 1;
		}
		fprintf(stderr, "tern queue: tern is not running (%s: %s)\n",
		    sun.sun_path, strerror(e));
		return 69;   /* EX_UNAVAILABLE */
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo));
	/* What we send is what we parsed: the folded id, one LF. */
	n = control_line_format(&req, line, sizeof(line));
	if (n == -1 ||
	    (util_write_all(fd, line, (size_t)n) == -1 && errno != EPIPE)) {
		fprintf(stderr, "tern queue: write: %s\n", strerror(errno));
		close(fd);
		return 69;
	}
	ans = evbuffer_new();
	if (ans == NULL)
		fatal("out of memory");
	for (;;) {
		int r = evbuffer_read(ans, fd, 65536);

		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			/* The server may refuse and close before reading. */
			if (errno == ECONNRESET && evbuffer_get_length(ans) > 0)
				break;
			fprintf(stderr, "tern queue: read: %s\n", strerror(errno));
			evbuffer_free(ans);
			close(fd);
			return 69;
		}
		if (evbuffer_get_length(ans) > CLIENT_ANSWER_MAX) {
			fprintf(stderr, "tern queue: answer too large\n");
			evbuffer_free(ans);
			close(fd);
			return 1;
		}
	}
	close(fd);
	len = evbuffer_get_length(ans);
	if (len == 0) {
		fprintf(stderr, "tern queue: no answer from tern (shutting down?)\n");
		evbuffer_free(ans);
		return 69;
	}
	rc = queue_control_answer((const char *)evbuffer_pullup(ans, -1), len,
	    &req, json, out, stderr);
	evbuffer_free(ans);
	return rc;
}
