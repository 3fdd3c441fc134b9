/*
 * dsn.h - delivery status notifications (RFC 3461, RFC 3464, RFC 6522):
 * the report message tern sends to a message's sender when recipients
 * fail, are delayed, or (with NOTIFY=SUCCESS) are delivered or relayed.
 *
 * A pure generator: no I/O, no clock, no globals. The queue
 * (queue/queue_report.c) decides when a report is owed and spools what dsn_build() produces as
 * a new message with the null reverse-path (docs/dsn.md).
 */
#ifndef TERN_DSN_H
#define TERN_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct envelope;
struct evbuffer;

/* RFC 3464 2.3.3 Action values tern reports. */
enum dsn_action {
	DSN_ACTION_FAILED,
	DSN_ACTION_DELAYED,
	DSN_ACTION_DELIVERED,   /* into a local mailbox */
	DSN_ACTION_RELAYED,     /* to a next hop that does not offer DSN */
};

/* One recipient's part of a report. Strings are borrowed. */
struct dsn_rcpt {
	const char *addr;        /* envelope recipient (Final-Recipient) */
	const char *orcpt;       /* ORCPT "addr-type;xtext" as received, or NULL */
	enum dsn_action action;
	const char *status;      /* RFC 3463 "x.y.z"; NULL: derived from the
	                          * diagnostic, else from the action */
	const char *remote_mta;  /* DNS name of the server that answered, or NULL */
	const char *diagnostic;  /* SMTP reply line "550 5.1.1 text", or NULL */
	int64_t last_attempt;    /* unix seconds; 0: no Last-Attempt-Date */
	int64_t retry_until;     /* DELAYED: Will-Retry-Until (unix s); 0: none */
};

struct dsn_params {
	const char *reporting_mta;  /* our host name: From:, Reporting-MTA */
	const char *unique;         /* token unique to this report (letters,
	                             * digits, '.', '-'): Message-ID */
	const char *nonce;          /* random letters and digits for the MIME
	                             * boundary, so it cannot be predicted; NULL:
	                             * unique is used (tests) */
	int64_t now;                /* Date:, unix seconds */
	size_t max_return;          /* octets of the original returned at most */
};

/*
 * Does a recipient whose NOTIFY bits (enum envelope_notify, 0: absent)
 * are notify want a report with this action? RFC 3461 4.1: NEVER wants
 * none; without NOTIFY, failures and delays only.
 */
bool dsn_wanted(unsigned notify, enum dsn_action action);

/*
 * Append to out the complete report for the message orig/msg (msglen
 * octets, CRLF lines, as spooled): a RFC 5322 message with CRLF lines of
 * at most 998 octets, From: MAILER-DAEMON@reporting_mta, To: the original
 * sender, Auto-Submitted: auto-replied (RFC 3834 5), and a
 * multipart/report; report-type=delivery-status body (RFC 6522) with a
 * plain-text explanation, a message/delivery-status part (RFC 3464) with
 * one group of fields per rcpts[i], and the returned content: the whole
 * message (message/rfc822) for a report with a failure when RET is FULL
 * or absent, cut at a line end after p->max_return octets; its header
 * (text/rfc822-headers) otherwise (RFC 3461 6.2). For a message whose
 * header holds UTF-8 (SMTPUTF8), message/global(-headers) (RFC 6532 3.7).
 *
 * report_env (initialised by the caller) receives the report's envelope:
 * null sender, one recipient (the original sender), arrival p->now,
 * BODY=8BITMIME when the report holds 8-bit octets, SMTPUTF8 when needed.
 * orig->sender must not be empty: a message with the null reverse-path
 * never gets a report (RFC 3461 6.2, RFC 5321 4.5.5); nrcpts >= 1.
 */
void dsn_build(const struct envelope *orig, const struct dsn_rcpt *rcpts,
    size_t nrcpts, const char *msg, size_t msglen,
    const struct dsn_params *p, struct evbuffer *out,
    struct envelope *report_env);

/*
 * RFC 3461 4: decode xtext ("+XX" hexchars, upper-case hex) from (in,
 * len) into out (NUL-terminated). -1 if it is not valid xtext or does not
 * fit; otherwise the decoded length.
 */
int dsn_xtext_decode(const char *in, size_t len, char *out, size_t outsize);

/*
 * RFC 3461 4: xtext-encode (in, len) into out: "+", "=", and octets
 * outside "!".."~" become "+XX". -1 if it does not fit; else the length.
 */
int dsn_xtext_encode(const char *in, size_t len, char *out, size_t outsize);

/*
 * The address-type and address of a DSN address field (Original- or
 * Final-Recipient) for a 7-bit message/delivery-status, into out:
 * "rfc822;addr" for an ASCII address, else "utf-8;" with the
 * utf-8-addr-xtext form (RFC 6533 3: non-ASCII, CTLs, SP, '\', '+', '='
 * as \x{HEX}). With orcpt (the ORCPT parameter "addr-type;xtext"), its
 * value decoded from xtext (RFC 3461 6.3(d)); a value that decodes to
 * anything but printable ASCII is kept as received. -1 if out is too
 * small.
 */
int dsn_address_field(const char *addr, const char *orcpt, char *out,
    size_t outsize);

#endif
