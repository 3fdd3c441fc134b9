/*
 * smtp_client_ehlo.c - the SMTP client from the greeting to a ready
 * connection: EHLO (HELO when EHLO gets a 5xx, RFC 5321 4.1.4, 3.2), the
 * capabilities it announces, STARTTLS (RFC 3207) and the start of AUTH.
 */
#include <string.h>

#include <event2/buffer.h>

#include "lib/util.h"
#include "relay/smtp_client.h"
#include "relay/smtp_client_int.h"

static bool
kw_is(const char *p, size_t n, const char *kw)
{
	return util_ascii_casecmp_n(p, n, kw, strlen(kw));
}

/* One EHLO keyword line (RFC 5321 4.1.1.1: ehlo-keyword *(SP ehlo-param)).
 * Unknown keywords are ignored. */
void
smtp_client_ehlo_line(struct reply_rd *rd, const char *p, size_t n)
{
	static const struct {
		const char *kw;
		unsigned cap;
	} kws[] = {
		{ "PIPELINING", SMTP_CLIENT_CAP_PIPELINING },
		{ "SIZE", SMTP_CLIENT_CAP_SIZE },
		{ "8BITMIME", SMTP_CLIENT_CAP_8BITMIME },
		{ "SMTPUTF8", SMTP_CLIENT_CAP_SMTPUTF8 },
		{ "DSN", SMTP_CLIENT_CAP_DSN },
		{ "CHUNKING", SMTP_CLIENT_CAP_CHUNKING },
		{ "STARTTLS", SMTP_CLIENT_CAP_STARTTLS },
		{ "ENHANCEDSTATUSCODES", SMTP_CLIENT_CAP_ENHANCEDSTATUSCODES },
	};
	size_t kl = 0;

	while (kl < n && p[kl] != ' ')
		kl++;
	/* RFC 4954 3: "AUTH" SP mechanism *(SP mechanism); some old servers
	 * also say "AUTH=PLAIN LOGIN". Only PLAIN and LOGIN are of use. */
	if (kl >= 4 && kw_is(p, 4, "AUTH") && (kl == 4 || p[4] == '=')) {
		size_t j = kl == 4 ? 4 : 5;

		while (j < n) {
			size_t t0;

			while (j < n && p[j] == ' ')
				j++;
			t0 = j;
			while (j < n && p[j] != ' ')
				j++;
			if (kw_is(p + t0, j - t0, "PLAIN"))
				rd->caps |= SMTP_CLIENT_CAP_AUTH_PLAIN;
			else if (kw_is(p + t0, j - t0, "LOGIN"))
				rd->caps |= SMTP_CLIENT_CAP_AUTH_LOGIN;
		}
		return;
	}
	for (size_t i = 0; i < nitems(kws); i++) {
		if (!kw_is(p, kl, kws[i].kw))
			continue;
		rd->caps |= kws[i].cap;
		if (kws[i].cap != SMTP_CLIENT_CAP_SIZE)
			return;
		/* RFC 1870 4: "SIZE" [SP 1*20DIGIT]; absent or 0: no limit.
		 * A malformed value is read as no announced limit. */
		size_t j = kl;
		uint64_t v = 0;
		while (j < n && p[j] == ' ')
			j++;
		size_t d0 = j;
		while (j < n && smtp_client_is_digit(p[j]) && j - d0 < 20) {
			uint64_t dv = (uint64_t)(p[j] - '0');
			v = v > (UINT64_MAX - dv) / 10 ? UINT64_MAX : v * 10 + dv;
			j++;
		}
		rd->size_max = (j > d0 && (j == n || p[j] == ' ')) ? v : 0;
		return;
	}
}

void
smtp_client_ehlo_write(struct smtp_client *c, bool esmtp)
{
	char line[CMD_MAX];
	int n = snprintf(line, sizeof(line), "%s %s", esmtp ? "EHLO" : "HELO",
	    c->params->helo_name);

	ASSERT(n > 0 && (size_t)n < sizeof(line));
	smtp_client_cmd_write(c, esmtp ? SMTP_CLIENT_STAGE_EHLO :
	    SMTP_CLIENT_STAGE_HELO, line, (size_t)n);
	c->state = CS_HELLO;
}

void
smtp_client_ehlo_on_greeting(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	/* RFC 5321 4.2, 3.1: 220 service ready; 554 (or any 4xx/5xx) means
	 * no service here: the caller tries the next MX (5.1). A 3yz reply
	 * answers nothing here; it must not decide recipients either (its
	 * code is no delivery status). */
	if (r->code / 100 == 3) {
		smtp_client_protocol_error(c, r, "the greeting");
		return;
	}
	if (r->code / 100 != 2) {
		smtp_client_fail(c, SMTP_CLIENT_ERR_GREETING, r);
		return;
	}
	if (c->want_quit && !c->tx.active) {
		c->state = CS_READY;
		return;
	}
	smtp_client_ehlo_write(c, true);
}

/* Greeted (and, if it came to that, TLS is up): AUTH, or ready. */
static void
hello_done(struct smtp_client *c)
{
	if (c->params->auth_user != NULL && c->params->auth_password != NULL) {
		/* RFC 4954 4 lets the client refuse to send a password in
		 * clear text; tern does unless the route allows it. */
		if (!c->tls && !c->params->auth_plaintext) {
			c->state = CS_AUTH;
			smtp_client_auth_refuse(c,
			    c->params->tls == SMTP_CLIENT_TLS_NO ||
			    !(c->caps & SMTP_CLIENT_CAP_STARTTLS) ?
			    "smarthost offers no STARTTLS: AUTH refused in clear "
			    "text (route auth_plaintext no)" :
			    "STARTTLS refused: AUTH refused in clear text (route "
			    "auth_plaintext no)");
			return;
		}
		smtp_client_auth_start(c);
		return;
	}
	c->state = CS_READY;
}

/* Fail the connection for TLS policy, with the server's reply if any. */
static void
tls_fail(struct smtp_client *c, const struct smtp_client_reply *r,
    const char *what)
{
	struct smtp_client_reply e;

	if (r != NULL)
		smtp_client_set_reply(&e, 0, "4.7.10", "%s: %s said %u %s", what,
		    c->params->peer ? c->params->peer : "peer", r->code, r->text);
	else
		smtp_client_set_reply(&e, 0, "4.7.10", "%s (%s)", what,
		    c->params->peer ? c->params->peer : "peer");
	smtp_client_fail(c, SMTP_CLIENT_ERR_TLS, &e);
}

/*
 * EHLO (or HELO) accepted. RFC 3207 4: STARTTLS only after EHLO, only
 * once; after the handshake the second EHLO's reply counts.
 */
static void
ehlo_done(struct smtp_client *c)
{
	bool want = c->params->tls != SMTP_CLIENT_TLS_NO &&
	    c->io->starttls != NULL && !c->tls;

	if (want && (c->caps & SMTP_CLIENT_CAP_STARTTLS)) {
		c->state = CS_TLS;
		smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_STARTTLS,
		    "STARTTLS", 8);
		return;
	}
	if (want && c->params->tls == SMTP_CLIENT_TLS_MUST) {
		c->state = CS_TLS;
		tls_fail(c, NULL, "TLS required, but the server does not offer "
		    "STARTTLS");
		return;
	}
	hello_done(c);
}

void
smtp_client_ehlo_on_starttls(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	if (r->code == 220) {
		/* RFC 3207 4.2: nothing of the clear-text dialogue survives;
		 * the transport drops any input that came with the 220. */
		c->handshake = true;
		c->caps = 0;
		c->size_max = 0;
		c->io->starttls(c->io_arg);
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	if (c->params->tls == SMTP_CLIENT_TLS_MUST) {
		tls_fail(c, r, "TLS required, but STARTTLS was refused");
		return;
	}
	/* Opportunistic: go on in clear text (RFC 3207 4.1). */
	hello_done(c);
}

void
smtp_client_ehlo_on_ehlo(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	if (r->code / 100 == 2) {
		c->caps = c->rd_caps | SMTP_CLIENT_CAP_ESMTP;
		c->size_max = c->rd_size_max;
		ehlo_done(c);
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	if (r->code / 100 == 5) {
		/* RFC 5321 4.1.4, 3.2: an old server; try HELO. */
		smtp_client_ehlo_write(c, false);
		return;
	}
	if (r->code / 100 == 3) {
		smtp_client_protocol_error(c, r, "EHLO");
		return;
	}
	smtp_client_fail(c, SMTP_CLIENT_ERR_HELO, r);
}

void
smtp_client_ehlo_on_helo(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	if (r->code / 100 == 2) {
		c->caps = 0;
		c->size_max = 0;
		ehlo_done(c);
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	if (r->code / 100 == 3) {
		smtp_client_protocol_error(c, r, "HELO");
		return;
	}
	smtp_client_fail(c, SMTP_CLIENT_ERR_HELO, r);
}
