/*
 * envelope.h - one message's envelope: sender, recipients and the ESMTP
 * parameters that travel with them (SIZE, BODY, SMTPUTF8, DSN).
 *
 * The same text serialisation is used on the IPC channel (smtp -> queue)
 * and at the head of each queue file (docs/spool-format.md), so there is
 * one parser to harden and fuzz. Records are "K value\n" lines; the parser
 * is strict and bounds every count and length.
 */
#ifndef TERN_ENVELOPE_H
#define TERN_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define ENVELOPE_VERSION 1
#define ENVELOPE_MAX_RCPTS 10000   /* hard bound, above any sane config */
#define ENVELOPE_MAX_FIELD 1024    /* any single value, in octets */
#define QUEUE_ID_LEN 16            /* hex characters */

enum envelope_body { ENVELOPE_BODY_NONE, ENVELOPE_BODY_7BIT, ENVELOPE_BODY_8BITMIME };

/* RFC 3461 4.1 NOTIFY; 0 means the parameter was absent. */
enum envelope_notify {
	ENVELOPE_NOTIFY_NEVER = 1 << 0,
	ENVELOPE_NOTIFY_SUCCESS = 1 << 1,
	ENVELOPE_NOTIFY_FAILURE = 1 << 2,
	ENVELOPE_NOTIFY_DELAY = 1 << 3,
};

enum envelope_ret { ENVELOPE_RET_NONE, ENVELOPE_RET_FULL, ENVELOPE_RET_HDRS };

struct envelope_rcpt {
	char *addr;      /* Mailbox as received, "local@domain" (no <>) */
	char *orcpt;     /* RFC 3461 4.2 ORCPT "addr-type;xtext" as sent, or NULL */
	unsigned notify; /* enum envelope_notify bits */
};

struct envelope {
	char id[QUEUE_ID_LEN + 1];   /* assigned by the queue; "" until then */
	int64_t arrival;             /* unix seconds */
	char *sender;                /* "" for the null reverse-path <> */
	char *helo;                  /* EHLO/HELO argument */
	char *client_addr;           /* peer IP as text */
	char *protocol;              /* "SMTP", "ESMTP", "UTF8SMTP", ... */
	enum envelope_body body;
	bool smtputf8;
	enum envelope_ret ret;
	char *envid;                 /* RFC 3461 4.4 ENVID xtext as sent, or NULL */
	uint64_t size_declared;      /* SIZE= from MAIL, 0 if absent */
	struct envelope_rcpt *rcpts;
	size_t nrcpts;
	size_t rcpts_cap;
};

void envelope_init(struct envelope *env);
/* Free every field; leaves env as after envelope_init(). */
void envelope_clear(struct envelope *env);
/* Copies addr and orcpt (may be NULL). */
void envelope_add_rcpt(struct envelope *env, const char *addr,
    const char *orcpt, unsigned notify);
/* Replace a string field (copying val, which may be NULL). */
void envelope_set(char **field, const char *val);

/* Append the text form to out; the last line is followed by no blank line. */
void envelope_serialize(const struct envelope *env, struct evbuffer *out);

/*
 * Parse the text form from (p, len) into env (initialised by the caller).
 * Returns 0, or -1 with a reason in err. Rejects unknown versions, control
 * characters in values, missing fields, and more than max_rcpts recipients.
 */
int envelope_parse(struct envelope *env, const char *p, size_t len,
    size_t max_rcpts, char *err, size_t errsize);

#endif
