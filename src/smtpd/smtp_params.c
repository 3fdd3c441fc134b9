/*
 * smtp_params.c - MAIL and RCPT with their ESMTP parameters (see
 * smtp_session_int.h): SIZE (RFC 1870), BODY (RFC 6152, RFC 3030),
 * SMTPUTF8 (RFC 6531), RET, ENVID, NOTIFY and ORCPT (RFC 3461), AUTH=
 * (RFC 4954 5); who may send to which domain (the listener's policy,
 * never an open relay), and the recipient limit.
 */
#include <inttypes.h>

#include "conf/config.h"
#include "conf/local_lookup.h"
#include "lib/log.h"
#include "lib/util.h"
#include "smtpd/smtp_session.h"
#include "smtpd/smtp_session_int.h"

/* ------------------------------------------------------------------ */
/* ESMTP parameters: "KEY[=VALUE]" separated by spaces (RFC 5321 4.1.2) */

struct param {
	const char *key;
	size_t keylen;
	const char *val;   /* NULL if no '=' */
	size_t vallen;
};

#define PARAMS_MAX 16

/* Split p..p+n into params. Returns the count, or -1 on syntax error. */
static int
params_split(const char *p, size_t n, struct param *out, bool utf8)
{
	int np = 0;
	size_t i = 0;

	while (i < n) {
		while (i < n && p[i] == ' ')
			i++;
		if (i == n)
			break;
		if (np == PARAMS_MAX)
			return -1;
		struct param *pp = &out[np++];
		pp->key = p + i;
		while (i < n && p[i] != ' ' && p[i] != '=') {
			unsigned char c = (unsigned char)p[i];
			/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || (c == '-' && p + i != pp->key)))
				return -1;
			i++;
		}
		pp->keylen = (size_t)(p + i - pp->key);
		if (pp->keylen == 0)
			return -1;
		pp->val = NULL;
		pp->vallen = 0;
		if (i < n && p[i] == '=') {
			i++;
			pp->val = p + i;
			while (i < n && p[i] != ' ') {
				unsigned char c = (unsigned char)p[i];
				/* esmtp-value = 1*(%d33-60 / %d62-126), UTF-8
				 * allowed under SMTPUTF8 (RFC 6531 3.3). */
				if (c == '=' || c < 33 || c == 127 || (c > 127 && !utf8))
					return -1;
				i++;
			}
			pp->vallen = (size_t)(p + i - pp->val);
			if (pp->vallen == 0)
				return -1;
		}
	}
	return np;
}

static bool
key_is(const struct param *pp, const char *name)
{
	return util_ascii_casecmp_n(pp->key, pp->keylen, name, strlen(name));
}

static bool
val_is(const struct param *pp, const char *v)
{
	return pp->val != NULL && util_ascii_casecmp_n(pp->val, pp->vallen, v, strlen(v));
}

static bool
params_dup(const struct param *pp, int np)
{
	for (int i = 0; i < np; i++)
		for (int j = i + 1; j < np; j++)
			if (util_ascii_casecmp_n(pp[i].key, pp[i].keylen,
			    pp[j].key, pp[j].keylen))
				return true;
	return false;
}

/* The parameters after a MAIL or RCPT path, split and checked; on an
 * error, reply (naming verb) and return -1. */
static int
params_parse(struct smtp_session *s, const char *p, size_t n, bool utf8,
    struct param *pp, const char *verb)
{
	int np = params_split(p, n, pp, utf8);

	if (np < 0) {
		smtp_session_reply(s, "501 5.5.4 Error: bad %s parameter syntax",
		    verb);
		return -1;
	}
	if (params_dup(pp, np)) {
		smtp_session_reply(s, "501 5.5.4 Error: duplicate %s parameter",
		    verb);
		return -1;
	}
	return np;
}

/* "FROM:" / "TO:" then optional spaces (tolerated, as most MTAs do). */
static bool
skip_keyword(const char **p, size_t *len, const char *kw)
{
	size_t kl = strlen(kw);

	if (*len < kl || !util_ascii_casecmp_n(*p, kl, kw, kl))
		return false;
	*p += kl;
	*len -= kl;
	while (*len > 0 && **p == ' ') {
		(*p)++;
		(*len)--;
	}
	return true;
}

static const char *
addr_error_reply(enum smtp_addr_error e, bool sender)
{
	switch (e) {
	case SMTP_ADDR_ERR_UTF8_NOT_ALLOWED:
		/* RFC 6531 3.5 */
		return "553 5.6.7 Error: non-ASCII address requires SMTPUTF8";
	case SMTP_ADDR_ERR_LOCAL_TOO_LONG:
	case SMTP_ADDR_ERR_DOMAIN_TOO_LONG:
	case SMTP_ADDR_ERR_PATH_TOO_LONG:
		/* RFC 5321 4.5.3.1 */
		return sender ? "501 5.1.7 Error: sender address too long" :
		    "501 5.1.3 Error: recipient address too long";
	default:
		return sender ? "501 5.1.7 Error: bad sender address syntax" :
		    "501 5.1.3 Error: bad recipient address syntax";
	}
}

/* What MAIL's parameters ask for. */
struct mail_args {
	enum envelope_body body;
	enum envelope_ret ret;
	bool utf8;
	uint64_t size;
	char envid[ENVID_MAX + 1];
};

/* RFC 1870 6: size-value = 1*20DIGIT; a larger number saturates. */
static bool
parse_size(const struct param *p, uint64_t *out)
{
	uint64_t size = 0;

	if (p->val == NULL || p->vallen > 20)
		return false;
	for (size_t k = 0; k < p->vallen; k++) {
		if (p->val[k] < '0' || p->val[k] > '9')
			return false;
		if (size > UINT64_MAX / 10 - 10)
			size = UINT64_MAX;
		else
			size = size * 10 + (uint64_t)(p->val[k] - '0');
	}
	*out = size;
	return true;
}

/* MAIL's parameters into m; on a bad one, reply and return false. */
static bool
mail_params(struct smtp_session *s, const struct param *pp, int np,
    struct mail_args *m)
{
	for (int i = 0; i < np; i++) {
		const struct param *p = &pp[i];
		if (key_is(p, "SIZE")) {
			if (!parse_size(p, &m->size)) {
				smtp_session_reply(s, "501 5.5.4 Error: bad SIZE parameter");
				return false;
			}
		} else if (key_is(p, "BODY")) {
			if (val_is(p, "7BIT"))
				m->body = ENVELOPE_BODY_7BIT;
			else if (val_is(p, "8BITMIME"))
				m->body = ENVELOPE_BODY_8BITMIME;
			else if (val_is(p, "BINARYMIME")) {
				/* RFC 3030 3: needs BINARYMIME, which we do not offer */
				smtp_session_reply(s, "504 5.5.4 Error: BODY=BINARYMIME is not supported");
				return false;
			} else {
				smtp_session_reply(s, "501 5.5.4 Error: bad BODY parameter");
				return false;
			}
		} else if (key_is(p, "SMTPUTF8")) {
			if (p->val != NULL) {
				smtp_session_reply(s, "501 5.5.4 Error: SMTPUTF8 takes no value");
				return false;
			}
			m->utf8 = true;
		} else if (key_is(p, "RET")) {
			if (val_is(p, "FULL"))
				m->ret = ENVELOPE_RET_FULL;
			else if (val_is(p, "HDRS"))
				m->ret = ENVELOPE_RET_HDRS;
			else {
				smtp_session_reply(s, "501 5.5.4 Error: bad RET parameter");
				return false;
			}
		} else if (key_is(p, "ENVID")) {
			/* RFC 3461 4.4: xtext, at most 100 characters */
			if (p->val == NULL || p->vallen > ENVID_MAX ||
			    !smtp_xtext_valid(p->val, p->vallen)) {
				smtp_session_reply(s, "501 5.5.4 Error: bad ENVID parameter");
				return false;
			}
			memcpy(m->envid, p->val, p->vallen);
			m->envid[p->vallen] = '\0';
		} else if (key_is(p, "AUTH") && smtp_auth_cmd_enabled(s)) {
			/* RFC 4954 5: accepted and not passed on (tern does
			 * not trust another server's AUTH= claims). */
			if (p->val == NULL || !smtp_xtext_valid(p->val,
			    p->vallen)) {
				smtp_session_reply(s, "501 5.5.4 Error: bad AUTH parameter");
				return false;
			}
		} else {
			char k[32];
			smtp_session_reply(s, "555 5.5.4 Error: unsupported MAIL parameter %s",
			    log_quote(k, sizeof(k), p->key, p->keylen, 20));
			return false;
		}
	}
	return true;
}

/* MAIL accepted: a new transaction for sender addr. */
static void
mail_begin(struct smtp_session *s, const char *addr, const struct mail_args *m)
{
	struct transaction *t = &s->tx;
	char proto[16], q[SMTP_ADDR_PATH_MAX * 4 + 8];

	smtp_session_tx_reset(s);
	t->env.arrival = util_now_us() / 1000000;
	envelope_set(&t->env.sender, addr);
	envelope_set(&t->env.helo, s->helo);
	envelope_set(&t->env.client_addr, s->client->addr);
	/* RFC 3848 (and RFC 6531 4.3 for UTF8SMTP): S for TLS, A for AUTH. */
	snprintf(proto, sizeof(proto), "%s%s%s", !s->esmtp ? "SMTP" :
	    m->utf8 ? "UTF8SMTP" : "ESMTP", s->esmtp && s->tls_active ? "S" : "",
	    s->esmtp && s->auth_user != NULL ? "A" : "");
	envelope_set(&t->env.protocol, proto);
	t->env.body = m->body;
	t->env.smtputf8 = m->utf8;
	t->env.ret = m->ret;
	t->env.size_declared = m->size;
	if (m->envid[0])
		envelope_set(&t->env.envid, m->envid);
	s->state = STATE_MAIL;
	log_info("smtp session=%s event=mail from=<%s> size=%" PRIu64, s->id,
	    log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX),
	    m->size);
	smtp_session_reply(s, "250 2.1.0 Ok");
}

void
smtp_params_do_mail(struct smtp_session *s, const char *args, size_t len)
{
	struct param pp[PARAMS_MAX];
	struct smtp_addr a;
	size_t used;
	int np;
	unsigned flags = SMTP_ADDR_NULL_OK;
	struct mail_args m = { .body = ENVELOPE_BODY_NONE,
		.ret = ENVELOPE_RET_NONE };
	char addr[SMTP_ADDR_PATH_MAX + 1];

	if (!smtp_session_need_helo(s))
		return;
	if (s->state != STATE_READY) {
		smtp_session_reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->listener->auth == CONFIG_LISTENER_AUTH_REQUIRED &&
	    s->auth_user == NULL) {
		/* RFC 4954 6, RFC 6409 4.3: submission needs AUTH first */
		smtp_session_reply(s, "530 5.7.0 Authentication required");
		return;
	}
	if (!skip_keyword(&args, &len, "FROM:")) {
		smtp_session_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	/* The path's syntax depends on SMTPUTF8, which follows it: parse the
	 * path allowing UTF-8, then the parameters, then check. */
	enum smtp_addr_error e = smtp_addr_parse_path(args, len,
	    flags | SMTP_ADDR_UTF8, &a, &used);
	if (e != SMTP_ADDR_OK || (used < len && args[used] != ' ')) {
		smtp_session_reply(s, "%s", addr_error_reply(e == SMTP_ADDR_OK ? SMTP_ADDR_ERR_SYNTAX : e, true));
		return;
	}
	np = params_parse(s, args + used, len - used, true, pp, "MAIL");
	if (np < 0 || !mail_params(s, pp, np, &m))
		return;
	if (!s->esmtp && np > 0) {
		/* RFC 5321 4.1.1.11: parameters only after EHLO */
		smtp_session_reply(s, "555 5.5.4 Error: MAIL parameters need EHLO");
		return;
	}
	if (a.has_utf8 && !m.utf8) {
		smtp_session_reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_UTF8_NOT_ALLOWED, true));
		return;
	}
	/* RFC 1870 6.1: refuse at MAIL what would be refused after DATA. */
	if (m.size > s->cfg->max_message_size) {
		smtp_session_reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
		return;
	}
	if (smtp_addr_format(&a, addr, sizeof(addr)) < 0) {
		smtp_session_reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_PATH_TOO_LONG, true));
		return;
	}
	if (s->auth_user != NULL && addr[0] != '\0' &&
	    !config_passwd_owns(s->auth_user, addr, strlen(addr))) {
		/* An authenticated user sends as itself only. The null
		 * sender stays allowed: RFC 6409 4.2 says it MUST NOT in
		 * itself be refused (disposition notifications use it). */
		char q[SMTP_ADDR_PATH_MAX * 4 + 8], u[SASL_FIELD_MAX * 4 + 8];

		log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX);
		log_quote(u, sizeof(u), s->auth_user->name,
		    strlen(s->auth_user->name), SASL_FIELD_MAX);
		smtp_session_reply(s, "553 5.7.1 <%.200s>: Sender address rejected: not "
		    "owned by user %.200s", q, u);
		return;
	}
	mail_begin(s, addr, &m);
}

/* RFC 3461 4.1: NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
static int
parse_notify(const struct param *p, unsigned *out)
{
	unsigned v = 0;
	const char *q = p->val, *end;

	/* "NOTIFY" without a value; NULL + 0 would be undefined */
	if (p->val == NULL)
		return -1;
	end = p->val + p->vallen;
	while (q < end) {
		const char *c = memchr(q, ',', (size_t)(end - q));
		size_t n = c ? (size_t)(c - q) : (size_t)(end - q);
		unsigned bit;
		if (util_ascii_casecmp_n(q, n, "NEVER", 5))
			bit = ENVELOPE_NOTIFY_NEVER;
		else if (util_ascii_casecmp_n(q, n, "SUCCESS", 7))
			bit = ENVELOPE_NOTIFY_SUCCESS;
		else if (util_ascii_casecmp_n(q, n, "FAILURE", 7))
			bit = ENVELOPE_NOTIFY_FAILURE;
		else if (util_ascii_casecmp_n(q, n, "DELAY", 5))
			bit = ENVELOPE_NOTIFY_DELAY;
		else
			return -1;
		if (v & bit)
			return -1;
		v |= bit;
		q += n;
		if (c != NULL) {
			q++;
			if (q == end)
				return -1;
		}
	}
	/* NEVER must stand alone. */
	if ((v & ENVELOPE_NOTIFY_NEVER) && v != ENVELOPE_NOTIFY_NEVER)
		return -1;
	*out = v;
	return 0;
}

/* RFC 3461 4.2: ORCPT=addr-type ";" xtext; RFC 6533 3 adds utf-8. */
static bool
orcpt_ok(const struct param *p, bool utf8)
{
	const char *semi;
	size_t tl;

	if (p->val == NULL || p->vallen > ORCPT_MAX)
		return false;
	semi = memchr(p->val, ';', p->vallen);
	if (semi == NULL || semi == p->val)
		return false;
	tl = (size_t)(semi - p->val);
	for (size_t i = 0; i < tl; i++) {
		char c = p->val[i];
		/* addr-type is an atom */
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	const char *v = semi + 1;
	size_t vl = p->vallen - tl - 1;
	if (vl == 0)
		return false;
	if (util_ascii_casecmp_n(p->val, tl, "utf-8", 5)) {
		/* utf-8-addr-xtext / -unitext: printable, no '+' '=' SP;
		 * raw UTF-8 only under SMTPUTF8 (RFC 6533 3). */
		for (size_t i = 0; i < vl; i++) {
			unsigned char c = (unsigned char)v[i];
			if (c == '+' || c == '=' || c <= ' ' || c == 127 ||
			    (c > 127 && !utf8))
				return false;
		}
		return true;
	}
	return smtp_xtext_valid(v, vl);
}

/* Remote addresses: local part exact, domain case-insensitive. */
static bool
same_remote_addr(const char *a, const char *b)
{
	const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');

	if (at_a == NULL || at_b == NULL || at_a - a != at_b - b ||
	    memcmp(a, b, (size_t)(at_a - a)) != 0)
		return false;
	return util_ascii_casecmp_n(at_a, strlen(at_a), at_b, strlen(at_b));
}

/* Add a recipient that passed every check. */
static void
rcpt_accept(struct smtp_session *s, const char *addr, const char *orcpt,
    unsigned notify, bool local, const char *q)
{
	struct transaction *t = &s->tx;
	const char *verdict = local ? "local" : "relay";

	/* The same recipient twice in one transaction gets one copy. Local
	 * parts are case-sensitive except in our own domains (RFC 5321 2.4),
	 * whose lookups fold case. */
	for (size_t i = 0; i < t->env.nrcpts; i++) {
		const char *o = t->env.rcpts[i].addr;
		bool same = local ?
		    util_ascii_casecmp_n(o, strlen(o), addr, strlen(addr)) :
		    same_remote_addr(o, addr);
		if (same) {
			verdict = "duplicate";
			goto out;
		}
	}
	envelope_add_rcpt(&t->env, addr, orcpt, notify);
out:
	t->rcpt_accepted++;
	smtp_session_reply(s, "250 2.1.5 Ok");
	log_info("smtp session=%s event=rcpt to=<%s> result=%s", s->id, q, verdict);
}

static void
domain_checked(void *arg, enum smtp_domain_verdict v)
{
	struct smtp_session *s = arg;
	char q[SMTP_ADDR_PATH_MAX * 4 + 8];
	const char *addr = s->pend_addr;

	s->dcheck_handle = NULL;
	log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX);
	switch (v) {
	case SMTP_DOMAIN_NULL_MX:
		/* RFC 7505 3: fail at once, never queue. */
		smtp_session_reply(s, "556 5.1.10 <%s>: Recipient address rejected: "
		    "domain does not accept mail (null MX)", q);
		log_info("smtp session=%s event=rcpt to=<%s> result=null-mx", s->id, q);
		break;
	case SMTP_DOMAIN_NXDOMAIN:
		smtp_session_reply(s, "550 5.1.2 <%s>: Recipient address rejected: "
		    "domain not found", q);
		log_info("smtp session=%s event=rcpt to=<%s> result=no-domain", s->id, q);
		break;
	default:
		rcpt_accept(s, addr, s->pend_has_orcpt ? s->pend_orcpt : NULL,
		    s->pend_notify, false, q);
		break;
	}
	smtp_session_resume(s, STATE_MAIL);
}

/* What RCPT names and asks for. */
struct rcpt_args {
	struct smtp_addr a;
	unsigned notify;
	bool has_orcpt;
	char orcpt[ORCPT_MAX + 1];
};

/* RCPT's parameters into r; on a bad one, reply and return false. */
static bool
rcpt_params(struct smtp_session *s, const struct param *pp, int np,
    struct rcpt_args *r)
{
	for (int i = 0; i < np; i++) {
		if (key_is(&pp[i], "NOTIFY")) {
			if (parse_notify(&pp[i], &r->notify) < 0) {
				smtp_session_reply(s, "501 5.5.4 Error: bad NOTIFY parameter");
				return false;
			}
		} else if (key_is(&pp[i], "ORCPT")) {
			if (!orcpt_ok(&pp[i], s->tx.env.smtputf8)) {
				smtp_session_reply(s, "501 5.5.4 Error: bad ORCPT parameter");
				return false;
			}
			/* orcpt_ok(): at most ORCPT_MAX octets */
			memcpy(r->orcpt, pp[i].val, pp[i].vallen);
			r->orcpt[pp[i].vallen] = '\0';
			r->has_orcpt = true;
		} else {
			char k[32];
			smtp_session_reply(s, "555 5.5.4 Error: unsupported RCPT parameter %s",
			    log_quote(k, sizeof(k), pp[i].key, pp[i].keylen, 20));
			return false;
		}
	}
	return true;
}

/* A well-formed recipient: who may send to it (the listener's policy,
 * the local users, never an open relay), then 250, or a DNS check of
 * its domain first. */
static void
rcpt_route(struct smtp_session *s, struct rcpt_args *r)
{
	const struct smtp_addr *a = &r->a;
	char addr[SMTP_ADDR_PATH_MAX + 1];
	char q[SMTP_ADDR_PATH_MAX * 4 + 8];
	const char *verdict;
	const struct config_domain *d = NULL;

	if (a->is_postmaster) {
		/* RFC 5321 4.5.1: <Postmaster> without a domain MUST be accepted. */
		d = s->cfg->ndomains > 0 ? &s->cfg->domains[0] : NULL;
		if (d == NULL) {
			smtp_session_reply(s, "451 4.3.0 Error: no local domain for postmaster");
			return;
		}
		snprintf(addr, sizeof(addr), "postmaster@%s", d->name);
	} else {
		if (smtp_addr_format(a, addr, sizeof(addr)) < 0) {
			smtp_session_reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_PATH_TOO_LONG, false));
			return;
		}
		if (!a->is_literal)
			d = config_find_domain(s->cfg, a->domain, strlen(a->domain));
	}
	log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX);
	/* Who may relay here: authenticated users and relay_networks
	 * clients, each if the listener allows it; nobody else, whatever
	 * the listener says, so tern is never an open relay. */
	bool may_relay = (s->auth_user != NULL && s->listener->relay_auth) ||
	    (s->client->relay_ok && s->listener->relay_networks);
	if (d != NULL && !may_relay && !s->listener->receive &&
	    !a->is_postmaster) {
		/* a listener that only serves its own users */
		smtp_session_reply(s, "554 5.7.1 <%s>: Recipient address rejected: Access denied", q);
		verdict = "receive-denied";
		goto log;
	}
	if (d != NULL) {
		if (!a->is_postmaster && local_lookup(d, a->local_value,
		    strlen(a->local_value)) == LOCAL_LOOKUP_UNKNOWN) {
			/* Refuse now: accepting and bouncing later is backscatter. */
			smtp_session_reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", q);
			verdict = "unknown";
			goto log;
		}
	} else if (!may_relay) {
		/* Never an open relay (RFC 5321 3.6.2). */
		smtp_session_reply(s, "554 5.7.1 <%s>: Relay access denied", q);
		verdict = "relay-denied";
		goto log;
	}
	if (d == NULL && !a->is_literal && s->dcheck != NULL) {
		/* Ask DNS about the domain before saying 250; input waits. */
		util_strlcpy(s->pend_addr, addr, sizeof(s->pend_addr));
		s->pend_has_orcpt = r->has_orcpt;
		if (r->has_orcpt)
			util_strlcpy(s->pend_orcpt, r->orcpt, sizeof(s->pend_orcpt));
		s->pend_notify = r->notify;
		smtp_session_wait(s);
		s->dcheck_handle = s->dcheck->start(s->dcheck_ctx, a->domain,
		    domain_checked, s);
		return;
	}
	rcpt_accept(s, addr, r->has_orcpt ? r->orcpt : NULL, r->notify,
	    d != NULL, q);
	return;
log:
	log_info("smtp session=%s event=rcpt to=<%s> result=%s", s->id, q, verdict);
}

void
smtp_params_do_rcpt(struct smtp_session *s, const char *args, size_t len)
{
	struct transaction *t = &s->tx;
	struct param pp[PARAMS_MAX];
	struct rcpt_args r = { .notify = 0 };
	size_t used;
	int np;

	if (!smtp_session_need_helo(s))
		return;
	if (s->state != STATE_MAIL) {
		smtp_session_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->tx.bdat) {
		/* RFC 3030 2: every RCPT comes before the first BDAT; the
		 * envelope is already with the queue. */
		smtp_session_reply(s, "503 5.5.1 Error: RCPT after BDAT");
		return;
	}
	if (!skip_keyword(&args, &len, "TO:")) {
		smtp_session_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	t->rcpt_attempts++;
	/* RFC 5321 4.5.3.1.10: 452 for too many recipients; the client
	 * sends the rest in another transaction. The limit counts accepted
	 * RCPT commands, not distinct recipients: duplicates are folded into
	 * one copy, but each still costs a command and a log line, so they
	 * must not let one transaction run without bound. */
	if (t->rcpt_accepted >= s->cfg->max_recipients) {
		if (!smtp_session_junk_ok(s))
			return;
		smtp_session_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	unsigned flags = SMTP_ADDR_POSTMASTER_OK | (t->env.smtputf8 ? SMTP_ADDR_UTF8 : 0);
	enum smtp_addr_error e = smtp_addr_parse_path(args, len, flags, &r.a, &used);
	if (e != SMTP_ADDR_OK) {
		smtp_session_reply(s, "%s", addr_error_reply(e, false));
		return;
	}
	if (used < len && args[used] != ' ') {
		smtp_session_reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_SYNTAX, false));
		return;
	}
	np = params_parse(s, args + used, len - used, t->env.smtputf8, pp,
	    "RCPT");
	if (np < 0 || !rcpt_params(s, pp, np, &r))
		return;
	if (!s->esmtp && np > 0) {
		smtp_session_reply(s, "555 5.5.4 Error: RCPT parameters need EHLO");
		return;
	}
	rcpt_route(s, &r);
}
