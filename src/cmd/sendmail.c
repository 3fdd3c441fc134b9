/*
 * sendmail.c - `tern sendmail` (see sendmail.h): read the message, talk
 * SMTP to the daemon's submit_socket, exit with a sysexits code.
 *
 * A short-lived command, so its I/O is plain blocking calls with socket
 * timeouts; every reply it reads is bounded (line length, line count).
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "cmd/sendmail.h"
#include "cmd/sendmail_msg.h"
#include "lib/util.h"

#define SM_SYSTEM_CONFIG "/etc/tern/tern.conf"
#define SM_CONFIG_MAX (16u << 20)          /* as config.c reads it */
#define SM_MESSAGE_MAX ((size_t)4 << 30)   /* tern's largest max_message_size */
#define SM_REPLY_LINE_MAX 2048             /* octets per reply line */
#define SM_REPLY_LINES_MAX 100             /* lines per reply */
#define SM_REPLY_TEXT_MAX 4096             /* kept for messages */
#define SM_TIMEOUT_SECS 600                /* RFC 5321 4.5.3.2.6: 10 min */

struct sm_conn {
	int fd;
	bool verbose;
	char in[SM_REPLY_LINE_MAX + 2];
	size_t inlen;
	char text[SM_REPLY_TEXT_MAX];      /* the last reply, lines joined */
	bool ext_8bitmime, ext_smtputf8, ext_size;
};

static void
sm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sm_warn(const char *fmt, ...)
{
	va_list ap;

	fputs("tern sendmail: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

bool
sendmail_invoked_as(const char *argv0)
{
	const char *slash = argv0 != NULL ? strrchr(argv0, '/') : NULL;

	return argv0 != NULL && strcmp(slash ? slash + 1 : argv0, "sendmail") == 0;
}

static void
usage_line(void)
{
	fprintf(stderr, "usage: tern sendmail [-t] [-i] [-f SENDER] [-F NAME] "
	    "[-C FILE] [-v] [--] [ADDRESS...] < message\n");
}

/* ------------------------------------------------------------------ */
/* configuration */

/* Read a whole file (at most max octets) into *out. -1 with errno. */
static int
read_file(const char *path, size_t max, struct sendmail_buf *out)
{
	char chunk[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd == -1)
		return -1;
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		if (out->len + (size_t)n > max) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
		sendmail_buf_add(out, chunk, (size_t)n);
	}
	close(fd);
	return 0;
}

/*
 * Find the submit socket and the host name: *sock is NULL when local
 * submission is disabled. Returns 0 or an exit status after a message.
 */
static int
load_settings(const char *path, char **sock, char **hostname)
{
	struct sendmail_buf text = { 0 };
	char *s_sock = NULL, *s_spool = NULL, *s_host = NULL, *spool;
	char err[256], cwd[4096];
	const char *name = path != NULL ? path : "(default)";

	if (path != NULL) {
		if (read_file(path, SM_CONFIG_MAX, &text) == -1) {
			sm_warn("cannot read configuration %s: %s", path,
			    strerror(errno));
			sendmail_buf_clear(&text);
			return EX_CONFIG;
		}
	} else {
		const char *d = config_default_text();
		sendmail_buf_add(&text, d, strlen(d));
	}
	if (sendmail_config_scan(text.p ? text.p : "", text.len, &s_sock,
	    &s_spool, &s_host, err, sizeof(err)) == -1) {
		sm_warn("%s: %s", name, err);
		sendmail_buf_clear(&text);
		return EX_CONFIG;
	}
	sendmail_buf_clear(&text);
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		util_strlcpy(cwd, "/", sizeof(cwd));
	*sock = NULL;
	if (s_sock != NULL && strcmp(s_sock, "none") == 0) {
		/* disabled */
	} else if (s_sock != NULL) {
		*sock = config_path_absolute(cwd, s_sock);
	} else {
		const char *def = config_option_default("spool");

		spool = config_path_absolute(cwd, s_spool ? s_spool :
		    def ? def : "./var/spool");
		if (spool != NULL)
			*sock = config_default_submit_socket(spool);
		free(spool);
	}
	if (s_host != NULL) {
		*hostname = s_host;
		s_host = NULL;
	} else {
		char host[256];

		if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
			util_strlcpy(host, "localhost", sizeof(host));
		host[sizeof(host) - 1] = '\0';
		*hostname = xstrdup(host);
	}
	util_ascii_lower(*hostname);
	free(s_sock);
	free(s_spool);
	free(s_host);
	if (*sock == NULL && s_sock == NULL) {
		sm_warn("%s: the submit socket path is too long", name);
		free(*hostname);
		return EX_CONFIG;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* the SMTP dialogue */

static int
sm_send(struct sm_conn *c, const char *data, size_t n)
{
	while (n > 0) {
		ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		data += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One reply line (without CRLF) into line; -1 on EOF, error, timeout
 * (errno set; ETIMEDOUT for a timeout) or an over-long line (EMSGSIZE). */
static int
sm_read_line(struct sm_conn *c, char *line, size_t size)
{
	for (;;) {
		char *nl = memchr(c->in, '\n', c->inlen);

		if (nl != NULL) {
			size_t n = (size_t)(nl - c->in), k = n;

			if (k > 0 && c->in[k - 1] == '\r')
				k--;
			if (k >= size)
				k = size - 1;
			memcpy(line, c->in, k);
			line[k] = '\0';
			memmove(c->in, nl + 1, c->inlen - n - 1);
			c->inlen -= n + 1;
			return 0;
		}
		if (c->inlen >= sizeof(c->in)) {
			errno = EMSGSIZE;
			return -1;
		}
		ssize_t r = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			errno = ETIMEDOUT;
		if (r == 0)
			errno = ECONNRESET;
		if (r <= 0)
			return -1;
		c->inlen += (size_t)r;
	}
}

/* Read one reply (RFC 5321 4.2.1). Returns its code, or -1 with errno.
 * c->text gets the lines, joined with " / ", cut to fit. */
static int
sm_reply(struct sm_conn *c, bool ehlo)
{
	char line[SM_REPLY_LINE_MAX + 1];
	int code = -1;
	size_t t = 0;

	c->text[0] = '\0';
	for (int i = 0; i < SM_REPLY_LINES_MAX; i++) {
		if (sm_read_line(c, line, sizeof(line)) == -1)
			return -1;
		if (c->verbose)
			fprintf(stderr, "<<< %s\n", line);
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' || line[2] < '0' ||
		    line[2] > '9' || (line[3] != '\0' && line[3] != ' ' &&
		    line[3] != '-') || (code != -1 && atoi(line) != code)) {
			errno = EPROTO;
			return -1;
		}
		code = atoi(line);
		if (ehlo && i > 0) {
			const char *kw = line + 4;
			if (strcasecmp(kw, "8BITMIME") == 0)
				c->ext_8bitmime = true;
			else if (strcasecmp(kw, "SMTPUTF8") == 0)
				c->ext_smtputf8 = true;
			else if (strncasecmp(kw, "SIZE", 4) == 0 &&
			    (kw[4] == '\0' || kw[4] == ' '))
				c->ext_size = true;
		}
		t += (size_t)snprintf(c->text + t, sizeof(c->text) - t, "%s%s",
		    t > 0 ? " / " : "", line);
		if (t >= sizeof(c->text))
			t = sizeof(c->text) - 1;
		if (line[3] != '-')
			return code;
	}
	errno = EPROTO;
	return -1;
}

/* Send a command line and read the reply. */
static int
sm_cmd(struct sm_conn *c, const char *line)
{
	if (c->verbose)
		fprintf(stderr, ">>> %s\n", line);
	if (sm_send(c, line, strlen(line)) == -1 || sm_send(c, "\r\n", 2) == -1)
		return -1;
	return sm_reply(c, strncmp(line, "EHLO", 4) == 0);
}

/* The exit status for a failed read or write on the socket. */
static int
io_failure(const char *path, const char *when)
{
	int e = errno;

	sm_warn("%s on %s: %s", when, path, e == EPROTO ?
	    "malformed reply" : strerror(e));
	return e == ETIMEDOUT ? EX_TEMPFAIL : e == EPROTO ? EX_PROTOCOL :
	    EX_IOERR;
}

/* Connect to the daemon. Returns the fd, or -1 with *status set. */
static int
sm_connect(const char *path, int *status)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = SM_TIMEOUT_SECS };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		sm_warn("submit socket path too long: %s", path);
		*status = EX_CONFIG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		sm_warn("socket: %s", strerror(errno));
		*status = EX_OSERR;
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;

		close(fd);
		if (e == EACCES || e == EPERM) {
			sm_warn("cannot connect to %s: %s (local submission is "
			    "not allowed for this user)", path, strerror(e));
			*status = EX_NOPERM;
		} else {
			sm_warn("cannot connect to %s: %s (is tern running?); "
			    "the message was not sent", path, strerror(e));
			*status = EX_TEMPFAIL;
		}
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

/* 4xx: try later; 5xx: the given permanent status. */
static int
reply_status(int code, int permanent)
{
	return code >= 400 && code < 500 ? EX_TEMPFAIL : permanent;
}

/*
 * The transaction: MAIL, every RCPT (all or nothing), DATA, content.
 * Returns the exit status.
 */
static int
submit(struct sm_conn *c, const char *path, const char *sender,
    const struct sendmail_list *rcpts, const struct sendmail_buf *data,
    size_t size, bool eightbit)
{
	struct sendmail_buf line = { 0 };
	bool utf8 = util_has_8bit(sender, strlen(sender));
	int code, status = 0, worst = 0;

	for (size_t i = 0; i < rcpts->n; i++)
		utf8 |= util_has_8bit(rcpts->v[i], strlen(rcpts->v[i]));
	if (utf8 && !c->ext_smtputf8) {
		sm_warn("the daemon does not offer SMTPUTF8, needed for a "
		    "non-ASCII address");
		return EX_UNAVAILABLE;
	}
	sendmail_buf_addf(&line, "MAIL FROM:<%s>", sender);
	if (c->ext_size)
		sendmail_buf_addf(&line, " SIZE=%zu", size);
	if (eightbit && c->ext_8bitmime)
		sendmail_buf_addf(&line, " BODY=8BITMIME");
	if (utf8)
		sendmail_buf_addf(&line, " SMTPUTF8");
	code = sm_cmd(c, line.p);
	sendmail_buf_clear(&line);
	if (code == -1)
		return io_failure(path, "MAIL FROM");
	if (code != 250) {
		sm_warn("sender <%s> refused: %s", sender, c->text);
		return reply_status(code, EX_DATAERR);
	}
	for (size_t i = 0; i < rcpts->n; i++) {
		sendmail_buf_addf(&line, "RCPT TO:<%s>", rcpts->v[i]);
		code = sm_cmd(c, line.p);
		sendmail_buf_clear(&line);
		if (code == -1)
			return io_failure(path, "RCPT TO");
		if (code == 250 || code == 251)
			continue;
		sm_warn("recipient <%s> refused: %s", rcpts->v[i], c->text);
		status = reply_status(code, EX_NOUSER);
		if (worst != EX_NOUSER)
			worst = status;
	}
	if (worst != 0) {
		sm_warn("nothing was sent (no recipient gets the message "
		    "unless all are accepted)");
		(void)sm_cmd(c, "RSET");
		return worst;
	}
	code = sm_cmd(c, "DATA");
	if (code == -1)
		return io_failure(path, "DATA");
	if (code != 354) {
		sm_warn("DATA refused: %s", c->text);
		return reply_status(code, EX_DATAERR);
	}
	if (c->verbose)
		fprintf(stderr, ">>> (%zu octets of message)\n>>> .\n", data->len);
	if (sm_send(c, data->p, data->len) == -1 || sm_send(c, ".\r\n", 3) == -1)
		return io_failure(path, "sending the message");
	code = sm_reply(c, false);
	if (code == -1)
		return io_failure(path, "end of data");
	if (code != 250) {
		sm_warn("message refused: %s", c->text);
		return reply_status(code, EX_DATAERR);
	}
	if (c->verbose)
		fprintf(stderr, "tern sendmail: %s\n", c->text);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the command */

/* A Message-ID (RFC 5322 3.6.4) unique to this host: time, pid, random. */
static void
add_message_id(struct sendmail_buf *h, const char *hostname)
{
	unsigned char r[8] = { 0 };
	unsigned long long x = 0;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		x = (unsigned long long)util_now_us();
	for (size_t i = 0; i < sizeof(r); i++)
		x = x << 8 | r[i];
	sendmail_buf_addf(h, "Message-ID: <%lld.%ld.%016llx@%s>\r\n",
	    (long long)time(NULL), (long)getpid(), x, hostname);
}

/* The full name of a passwd entry: gecos up to its first comma. */
static char *
gecos_name(const struct passwd *pw)
{
	const char *g = pw != NULL ? pw->pw_gecos : NULL;

	if (g == NULL || *g == '\0' || *g == ',')
		return NULL;
	return xstrndup(g, strcspn(g, ","));
}

int
sendmail_main(int argc, char **argv, int first)
{
	struct sendmail_opts o;
	struct sendmail_msg m = { 0 };
	struct sendmail_list rcpts = { 0 }, one = { 0 };
	struct sendmail_buf input = { 0 }, content = { 0 }, data = { 0 };
	struct sm_conn c = { .fd = -1 };
	char err[512], date[64];
	char *sock = NULL, *hostname = NULL, *user_addr = NULL, *name = NULL;
	const char *config;
	const char *sender;
	struct passwd *pw;
	int status, code;

	if (sendmail_parse_args(argc, argv, first, &o, err, sizeof(err)) != 0) {
		sm_warn("%s", err);
		usage_line();
		return EX_USAGE;
	}
	config = o.config;
	if (config == NULL && (config = getenv("TERN_CONFIG")) != NULL &&
	    *config == '\0')
		config = NULL;
	if (config == NULL && access(SM_SYSTEM_CONFIG, F_OK) == 0)
		config = SM_SYSTEM_CONFIG;
	if ((status = load_settings(config, &sock, &hostname)) != 0)
		goto out;
	if (sock == NULL) {
		sm_warn("local submission is disabled (submit_socket none in %s)",
		    config ? config : "the default configuration");
		status = EX_UNAVAILABLE;
		goto out;
	}

	/* Who is sending: the envelope sender is -f (trusted, as Postfix
	 * does by default: the Received: header names the real uid). */
	pw = getpwuid(getuid());
	if (pw != NULL)
		user_addr = xasprintf("%s@%s", pw->pw_name, hostname);
	else
		user_addr = xasprintf("uid%lu@%s", (unsigned long)getuid(), hostname);
	if (o.sender == NULL) {
		sender = user_addr;
	} else if (o.sender[0] == '\0' || strcmp(o.sender, "<>") == 0) {
		sender = "";   /* the null reverse-path: bounces and the like */
	} else {
		int n = sendmail_parse_addresses(o.sender, strlen(o.sender),
		    hostname, &one, err, sizeof(err));
		if (n != 1 || one.n != 1) {
			sm_warn("bad sender -f %s: %s", o.sender, n == -1 ? err :
			    "one address expected");
			status = EX_DATAERR;
			goto out;
		}
		sender = one.v[0];
	}
	for (size_t i = 0; i < o.nrcpts; i++) {
		if (sendmail_parse_addresses(o.rcpts[i], strlen(o.rcpts[i]),
		    hostname, &rcpts, err, sizeof(err)) == -1) {
			sm_warn("bad recipient %s: %s", o.rcpts[i], err);
			status = EX_DATAERR;
			goto out;
		}
	}

	/* The message: all of stdin (bounded). */
	for (;;) {
		char chunk[65536];
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			sm_warn("reading the message from stdin: %s", strerror(errno));
			status = EX_IOERR;
			goto out;
		}
		if (n == 0)
			break;
		if (input.len + (size_t)n > SM_MESSAGE_MAX) {
			sm_warn("message larger than 4 GiB");
			status = EX_DATAERR;
			goto out;
		}
		sendmail_buf_add(&input, chunk, (size_t)n);
	}
	if (sendmail_msg_parse(input.p ? input.p : "", input.len, o.ignore_dots,
	    o.extract, hostname, &m, err, sizeof(err)) == -1) {
		sm_warn("%s", err);
		status = EX_DATAERR;
		goto out;
	}
	/* -t with arguments: both are recipients (as Postfix does; the
	 * historical sendmail removed the arguments instead). */
	for (size_t i = 0; i < m.rcpts.n; i++)
		sendmail_list_add(&rcpts, m.rcpts.v[i], strlen(m.rcpts.v[i]));
	if (rcpts.n == 0) {
		sm_warn(o.extract ? "no recipients: none in the To:, Cc: or Bcc: "
		    "header and none given as arguments" :
		    "no recipients given (name them as arguments, or use -t)");
		usage_line();
		status = EX_USAGE;
		goto out;
	}

	/* RFC 5322 3.6 and RFC 6409 8.1-8.3: a submission server adds the
	 * origination date, From: and Message-ID: when they are missing. */
	sendmail_buf_add(&content, m.header.p, m.header.len);
	if (!m.has_from) {
		name = o.fullname ? xstrdup(o.fullname) : gecos_name(pw);
		sendmail_buf_add(&content, "From: ", 6);
		if (name != NULL && *name != '\0') {
			sendmail_display_name(&content, name);
			sendmail_buf_addf(&content, " <%s>\r\n",
			    sender[0] ? sender : user_addr);
		} else {
			sendmail_buf_addf(&content, "%s\r\n",
			    sender[0] ? sender : user_addr);
		}
	}
	if (!m.has_date) {
		util_rfc5322_date(util_now_us() / 1000000, date, sizeof(date));
		sendmail_buf_addf(&content, "Date: %s\r\n", date);
	}
	if (!m.has_message_id)
		add_message_id(&content, hostname);
	sendmail_buf_add(&content, "\r\n", 2);
	sendmail_buf_add(&content, m.body.p, m.body.len);
	sendmail_dot_stuff(&data, content.p, content.len);

	/* The daemon. */
	if ((c.fd = sm_connect(sock, &status)) == -1)
		goto out;
	c.verbose = o.verbose;
	if ((code = sm_reply(&c, false)) == -1) {
		status = io_failure(sock, "greeting");
		goto out;
	}
	if (code != 220) {
		sm_warn("tern refuses the session: %s", c.text);
		status = reply_status(code, EX_UNAVAILABLE);
		goto out;
	}
	if ((code = sm_cmd(&c, "EHLO localhost")) == -1) {
		status = io_failure(sock, "EHLO");
		goto out;
	}
	if (code != 250) {
		sm_warn("EHLO refused: %s", c.text);
		status = reply_status(code, EX_PROTOCOL);
		goto out;
	}
	status = submit(&c, sock, sender, &rcpts, &data, content.len,
	    util_has_8bit(content.p, content.len));
	(void)sm_cmd(&c, "QUIT");
out:
	if (c.fd != -1)
		close(c.fd);
	free(o.rcpts);
	free(sock);
	free(hostname);
	free(user_addr);
	free(name);
	sendmail_list_clear(&rcpts);
	sendmail_list_clear(&one);
	sendmail_msg_clear(&m);
	sendmail_buf_clear(&input);
	sendmail_buf_clear(&content);
	sendmail_buf_clear(&data);
	return status;
}
