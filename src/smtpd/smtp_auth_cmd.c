/*
 * smtp_auth_cmd.c - the AUTH command of the session engine (RFC 4954)
 * with PLAIN (RFC 4616) and LOGIN (see smtp_session_int.h).
 *
 * The engine decodes the exchange (sasl.h) and hands the credentials to
 * smtp_auth_ops (auth.c in the daemon), which verifies them off the event
 * loop and delays failures; the session waits meanwhile with no deadline
 * running, since the delay is the server's, not the client's.
 */
#include <event2/buffer.h>

#include "conf/config.h"
#include "lib/conn.h"
#include "lib/log.h"
#include "lib/util.h"
#include "smtpd/smtp_session.h"
#include "smtpd/smtp_session_int.h"

/* AUTH exists here: a verifier, users, and a listener that offers it. */
bool
smtp_auth_cmd_enabled(const struct smtp_session *s)
{
	return s->aops != NULL && s->cfg->passwd_file != NULL &&
	    s->listener->auth != CONFIG_LISTENER_AUTH_NO;
}

/* ... and may be used now: over TLS, or in clear text if the listener
 * allows it. RFC 4954 6 (538): do not offer what cannot be used. */
bool
smtp_auth_cmd_usable(const struct smtp_session *s)
{
	return smtp_auth_cmd_enabled(s) && (s->tls_active ||
	    s->listener->auth_plaintext);
}

static void
auth_log(struct smtp_session *s, const char *user, size_t ulen,
    const char *result)
{
	char u[SASL_FIELD_MAX * 4 + 8];

	log_info("smtp session=%s event=auth mech=%s user=\"%s\" result=%s",
	    s->id, s->auth_mech ? s->auth_mech : "-",
	    log_quote(u, sizeof(u), user, ulen, SASL_FIELD_MAX), result);
}

/* The exchange ends without a verification: back to commands. */
static void
auth_end(struct smtp_session *s)
{
	s->auth_step = AUTH_STEP_NONE;
	explicit_bzero(s->auth_try, sizeof(s->auth_try));
	s->state = STATE_READY;
	smtp_session_deadline_arm(s);
}

static void
auth_done(void *arg, enum smtp_auth_verdict v)
{
	struct smtp_session *s = arg;
	size_t ulen = strlen(s->auth_try);

	s->auth_handle = NULL;
	switch (v) {
	case SMTP_AUTH_OK:
		s->auth_user = config_find_passwd(s->cfg, s->auth_try, ulen);
		if (s->auth_user == NULL) {
			/* the verifier and the config disagree: never */
			smtp_session_reply(s, "454 4.7.0 Temporary authentication failure");
			auth_log(s, s->auth_try, ulen, "tempfail");
			break;
		}
		smtp_session_reply(s, "235 2.7.0 Authentication successful");
		auth_log(s, s->auth_try, ulen, "ok");
		break;
	case SMTP_AUTH_FAILED:
		smtp_session_reply(s, "535 5.7.8 Error: authentication failed");
		auth_log(s, s->auth_try, ulen, "failed");
		break;
	case SMTP_AUTH_LOCKED:
		smtp_session_reply(s, "421 4.7.0 %s Error: too many failed authentications, "
		    "try again later", s->cfg->hostname);
		auth_log(s, s->auth_try, ulen, "locked");
		explicit_bzero(s->auth_try, sizeof(s->auth_try));
		s->auth_step = AUTH_STEP_NONE;
		smtp_session_close(s);
		smtp_session_resume(s, STATE_CLOSED);
		return;
	case SMTP_AUTH_TEMPFAIL:
		smtp_session_reply(s, "454 4.7.0 Temporary authentication failure");
		auth_log(s, s->auth_try, ulen, "tempfail");
		break;
	}
	s->auth_step = AUTH_STEP_NONE;
	explicit_bzero(s->auth_try, sizeof(s->auth_try));
	smtp_session_resume(s, STATE_READY);
}

/* Hand user and password to the verifier and wait for its answer. */
static void
auth_verify(struct smtp_session *s, const char *user, size_t ulen,
    const char *pass, size_t plen)
{
	memcpy(s->auth_try, user, ulen);
	s->auth_try[ulen] = '\0';
	s->auth_step = AUTH_STEP_NONE;
	smtp_session_wait(s);
	s->auth_handle = s->aops->start(s->actx, s->client->addr, user, ulen,
	    pass, plen, auth_done, s);
}

/* A user name or password must be 1..255 octets without NUL or line
 * ends (RFC 4616 2: UTF-8 without NUL). */
static bool
auth_field_ok(const char *p, size_t n)
{
	if (n == 0 || n > SASL_FIELD_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
			return false;
	return true;
}

/*
 * One client response of the exchange (the initial response or a line
 * after a 334), still base64. Replies, or starts a verification.
 */
static void
auth_response(struct smtp_session *s, const char *line, size_t len)
{
	unsigned char dec[SMTP_SESSION_AUTH_LINE_MAX / 4 * 3 + 3];
	ssize_t n;

	/* RFC 4954 4: "*" cancels, with a 501 */
	if (len == 1 && line[0] == '*') {
		smtp_session_reply(s, "501 5.7.0 Authentication aborted");
		auth_log(s, s->auth_try, strlen(s->auth_try), "aborted");
		auth_end(s);
		return;
	}
	/* RFC 4954 4: "=" is an empty initial response; base64 is strict */
	if (len == 1 && line[0] == '=')
		n = 0;
	else if ((n = sasl_b64_decode(line, len, dec, sizeof(dec))) < 0 ||
	    (n == 0 && len > 0)) {
		smtp_session_reply(s, "501 5.5.2 Error: cannot decode response");
		auth_end(s);
		return;
	}
	if (len == 0) {
		/* an empty line is not base64 of anything, not even "" */
		smtp_session_reply(s, "501 5.5.2 Error: cannot decode response");
		auth_end(s);
		return;
	}
	switch (s->auth_step) {
	case AUTH_STEP_PLAIN: {
		struct sasl_plain pl;

		if (!sasl_plain_parse(dec, (size_t)n, &pl) ||
		    !auth_field_ok(pl.authcid, pl.authcid_len) ||
		    !auth_field_ok(pl.passwd, pl.passwd_len)) {
			smtp_session_reply(s, "501 5.5.2 Error: malformed PLAIN response");
			auth_end(s);
			break;
		}
		/* RFC 4616 2: an authzid other than the authcid asks to act
		 * as someone else; tern has no such right to give. */
		if (pl.authzid_len > 0 && (pl.authzid_len != pl.authcid_len ||
		    memcmp(pl.authzid, pl.authcid, pl.authcid_len) != 0)) {
			smtp_session_reply(s, "535 5.7.8 Error: authentication failed: "
			    "authorization identity not allowed");
			auth_log(s, pl.authcid, pl.authcid_len, "bad-authzid");
			auth_end(s);
			break;
		}
		auth_verify(s, pl.authcid, pl.authcid_len, pl.passwd,
		    pl.passwd_len);
		break;
	}
	case AUTH_STEP_LOGIN_USER:
		if (!auth_field_ok((const char *)dec, (size_t)n)) {
			smtp_session_reply(s, "501 5.5.2 Error: malformed user name");
			auth_end(s);
			break;
		}
		memcpy(s->auth_try, dec, (size_t)n);
		s->auth_try[n] = '\0';
		s->auth_step = AUTH_STEP_LOGIN_PASS;
		s->state = STATE_AUTH;
		smtp_session_deadline_arm(s);
		smtp_session_reply(s, "334 UGFzc3dvcmQ6");        /* "Password:" */
		break;
	case AUTH_STEP_LOGIN_PASS:
		if (!auth_field_ok((const char *)dec, (size_t)n)) {
			smtp_session_reply(s, "501 5.5.2 Error: malformed password");
			auth_end(s);
			break;
		}
		auth_verify(s, s->auth_try, strlen(s->auth_try),
		    (const char *)dec, (size_t)n);
		break;
	case AUTH_STEP_NONE:
		ASSERT(!"AUTH response without an exchange");
	}
	explicit_bzero(dec, sizeof(dec));
}

/* The mechanisms, with the step their first response is and the
 * challenge that asks for it when the AUTH line has none. */
static const struct {
	const char *name;
	enum auth_step step;
	const char *challenge;
} mechs[] = {
	/* RFC 4954 4: an empty challenge is "334 " */
	{ "PLAIN", AUTH_STEP_PLAIN, "334 " },
	{ "LOGIN", AUTH_STEP_LOGIN_USER, "334 VXNlcm5hbWU6" },   /* "Username:" */
};

/*
 * The client's address is locked out after too many failed AUTH
 * attempts (auth.h): 421 4.7.0, a log line and close. Returns true then.
 */
bool
smtp_auth_cmd_refuse_throttled(struct smtp_session *s)
{
	if (s->aops->throttled == NULL ||
	    !s->aops->throttled(s->actx, s->client->addr))
		return false;
	smtp_session_reply(s, "421 4.7.0 %s Error: too many failed "
	    "authentications, try again later", s->cfg->hostname);
	log_info("smtp session=%s event=disconnect reason=auth-throttled",
	    s->id);
	smtp_session_close(s);
	return true;
}

void
smtp_auth_cmd_do_auth(struct smtp_session *s, const char *args, size_t len)
{
	size_t ml = 0;

	if (!smtp_session_need_helo(s))
		return;
	if (!smtp_auth_cmd_enabled(s) || !s->esmtp) {
		smtp_session_reply(s, "503 5.5.1 Error: authentication not enabled");
		return;
	}
	/* RFC 4954 4: never twice, never inside a transaction (503) */
	if (s->auth_user != NULL) {
		smtp_session_reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state != STATE_READY) {
		smtp_session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	if (!smtp_auth_cmd_usable(s)) {
		/* RFC 4954 6 */
		smtp_session_reply(s, "538 5.7.11 Encryption required for requested "
		    "authentication mechanism");
		return;
	}
	if (smtp_auth_cmd_refuse_throttled(s))
		return;
	while (ml < len && args[ml] != ' ')
		ml++;
	const char *ir = ml < len ? args + ml + 1 : NULL;
	size_t irlen = ml < len ? len - ml - 1 : 0;
	if (ml == 0 || (ir != NULL && (irlen == 0 || memchr(ir, ' ', irlen)))) {
		smtp_session_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	s->auth_try[0] = '\0';
	for (size_t i = 0; i < nitems(mechs); i++) {
		if (!util_ascii_casecmp_n(args, ml, mechs[i].name,
		    strlen(mechs[i].name)))
			continue;
		s->auth_mech = mechs[i].name;
		s->auth_step = mechs[i].step;
		if (ir != NULL) {
			/* (LOGIN: some clients send the user name at once) */
			auth_response(s, ir, irlen);
			return;
		}
		s->state = STATE_AUTH;
		smtp_session_deadline_arm(s);
		smtp_session_reply_raw(s, mechs[i].challenge);
		return;
	}
	/* RFC 4954 4: 504, 5.5.4 */
	smtp_session_reply(s, "504 5.5.4 Error: unsupported authentication mechanism");
}

/*
 * Read one AUTH response line (STATE_AUTH), up to
 * SMTP_SESSION_AUTH_LINE_MAX octets; a longer one is discarded to its
 * end and fails the exchange (RFC 4954 4: 500 5.5.6). Returns 1 when a
 * line was handled, 0 if more input is needed.
 */
int
smtp_auth_cmd_read_line(struct smtp_session *s)
{
	char buf[SMTP_SESSION_AUTH_LINE_MAX + 1];
	size_t rawlen;
	enum conn_line found = conn_line(s->in, SMTP_SESSION_AUTH_LINE_MAX,
	    &rawlen);

	if (found == CONN_LINE_MORE)
		return 0;
	if (found == CONN_LINE_TOO_LONG) {
		s->skipping_auth_line = true;
		return 1;
	}
	size_t len = rawlen - 1;
	evbuffer_remove(s->in, buf, rawlen);
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (s->skipping_auth_line) {
		s->skipping_auth_line = false;
		smtp_session_reply(s, "500 5.5.6 Authentication Exchange line is too long");
		auth_end(s);
	} else {
		auth_response(s, buf, len);
	}
	explicit_bzero(buf, rawlen);
	return 1;
}
