/*
 * smtp_client_auth.c - AUTH on the client side (RFC 4954): PLAIN with an
 * initial response (RFC 4616) when offered, else LOGIN. It sits between
 * EHLO and the first transaction: state CS_AUTH holds transactions back
 * until 235. The credentials only leave this file base64-encoded on the
 * wire; the buffers that held them are zeroed, and no log line carries
 * them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/log.h"
#include "lib/util.h"
#include "mail/sasl.h"
#include "relay/smtp_client.h"
#include "relay/smtp_client_int.h"

/* A command line that carries a secret: written, then wiped. */
static void
cmd_write_secret(struct smtp_client *c, const char *prefix,
    const char *secret, size_t len)
{
	char line[CMD_MAX];
	size_t pl = strlen(prefix);

	ssize_t n;

	ASSERT(pl < sizeof(line));
	memcpy(line, prefix, pl);
	/* credentials are at most AUTH_MAX octets each: they always fit */
	n = sasl_b64_encode(secret, len, line + pl, sizeof(line) - pl);
	ASSERT(n >= 0);
	smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_AUTH, line, pl + (size_t)n);
	explicit_bzero(line, sizeof(line));
}

/*
 * AUTH refused or impossible (r: the server's reply, or the engine's own
 * with code 0). A 5xx decides the open recipients for good: the
 * credentials are wrong and retrying cannot help until the administrator
 * fixes them; anything else leaves them temporary. The connection ends
 * with a QUIT whose reply nobody waits for.
 */
static void
auth_fail(struct smtp_client *c, const struct smtp_client_reply *r)
{
	char q[SMTP_CLIENT_TEXT_MAX * 4 + 8];

	log_info("client session=%s event=auth peer=%s mechanism=%s "
	    "result=failed reply=\"%u %s %s\"", c->id,
	    c->params->peer ? c->params->peer : "-",
	    c->auth_mech ? c->auth_mech : "none", r->code, r->enhanced,
	    log_quote(q, sizeof(q), r->text, strlen(r->text), 200));
	/* Temporary whatever the code: a rejected or rotated password is the
	 * administrator's to fix, and the mail must wait for that rather
	 * than be failed (as Postfix's smtp_sasl_auth_soft_bounce). */
	if (c->tx.active)
		for (size_t i = 0; i < c->tx.n; i++)
			if (c->tx.rst[i] != R_DONE) {
				smtp_client_tx_rcpt_final(&c->tx, i,
				    SMTP_CLIENT_STAGE_AUTH, r);
				c->tx.res[i].status = SMTP_CLIENT_TEMPFAIL;
			}
	evbuffer_add(c->out, "QUIT\r\n", 6);
	smtp_client_fail(c, SMTP_CLIENT_ERR_AUTH, r);
}

void
smtp_client_auth_refuse(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void
smtp_client_auth_refuse(struct smtp_client *c, const char *fmt, ...)
{
	struct smtp_client_reply r = { .code = 0 };
	va_list ap;

	util_strlcpy(r.enhanced, "4.7.0", sizeof(r.enhanced));
	va_start(ap, fmt);
	vsnprintf(r.text, sizeof(r.text), fmt, ap);
	va_end(ap);
	auth_fail(c, &r);
}

/* RFC 4954 4: AUTH after EHLO, before MAIL; PLAIN preferred (one round
 * trip, RFC 4616 with an initial response), else LOGIN. */
void
smtp_client_auth_start(struct smtp_client *c)
{
	const char *u = c->params->auth_user, *pw = c->params->auth_password;
	size_t ul = strlen(u), pl = strlen(pw);

	c->state = CS_AUTH;
	if (ul == 0 || ul > AUTH_MAX || pl == 0 || pl > AUTH_MAX) {
		smtp_client_auth_refuse(c, "AUTH credentials unusable (user name "
		    "and password must be 1..%d octets)", AUTH_MAX);
		return;
	}
	if (c->caps & SMTP_CLIENT_CAP_AUTH_PLAIN) {
		/* RFC 4616 2: [authzid] NUL authcid NUL passwd */
		char raw[2 * AUTH_MAX + 2];

		raw[0] = '\0';
		memcpy(raw + 1, u, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, pw, pl);
		c->auth_mech = "PLAIN";
		c->auth_step = AUTH_PLAIN_SENT;
		cmd_write_secret(c, "AUTH PLAIN ", raw, ul + pl + 2);
		explicit_bzero(raw, sizeof(raw));
	} else if (c->caps & SMTP_CLIENT_CAP_AUTH_LOGIN) {
		c->auth_mech = "LOGIN";
		c->auth_step = AUTH_LOGIN_USER;
		smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_AUTH, "AUTH LOGIN",
		    10);
	} else {
		smtp_client_auth_refuse(c, "smarthost offers no AUTH "
		    "PLAIN/LOGIN");
	}
}

void
smtp_client_auth_on_reply(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	const char *secret;

	if (r->code / 100 == 2) {
		/* 235 (RFC 4954 6); another 2xx is taken as success too. */
		log_info("client session=%s event=auth peer=%s mechanism=%s "
		    "user=%s result=ok", c->id,
		    c->params->peer ? c->params->peer : "-", c->auth_mech,
		    c->params->auth_user);
		c->auth_step = AUTH_NONE;
		c->state = CS_READY;
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	if (r->code == 334 && (c->auth_step == AUTH_LOGIN_USER ||
	    c->auth_step == AUTH_LOGIN_PASS)) {
		/* LOGIN's challenges ("Username:", "Password:") come in
		 * that order; their text is not needed. */
		secret = c->auth_step == AUTH_LOGIN_USER ?
		    c->params->auth_user : c->params->auth_password;
		c->auth_step = c->auth_step == AUTH_LOGIN_USER ?
		    AUTH_LOGIN_PASS : AUTH_LOGIN_DONE;
		cmd_write_secret(c, "", secret, strlen(secret));
		return;
	}
	if (r->code / 100 == 3) {
		/* A challenge we have nothing more for. */
		smtp_client_protocol_error(c, r, "AUTH");
		return;
	}
	auth_fail(c, r);
}
