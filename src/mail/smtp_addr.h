/*
 * smtp_addr.h - RFC 5321 Path / Mailbox parser (section 4.1.2), with the
 * UTF-8 extension of RFC 6531 section 3.3, and xtext (RFC 3461 section 4).
 *
 * Parses from pointer+length views and never relies on NUL termination.
 * Hostile relay tricks are *not* special-cased here: "user%other", quoted
 * "user@other" and the like are simply local parts, and the caller's local
 * lookup refuses them. "user@other@local" is a syntax error.
 */
#ifndef TERN_SMTP_ADDR_H
#define TERN_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.1-3 limits, in octets. */
#define SMTP_ADDR_LOCAL_MAX 64
#define SMTP_ADDR_DOMAIN_MAX 255
#define SMTP_ADDR_PATH_MAX 256       /* "<" Mailbox ">" included */
#define SMTP_ADDR_MAILBOX_MAX 254    /* path minus the angle brackets */
/* RFC 1035 2.3.4; a longer label is SMTP_ADDR_ERR_DOMAIN_TOO_LONG. A
 * U-label is held to this limit as its A-label (RFC 5890 2.3.2.1). */
#define SMTP_ADDR_LABEL_MAX 63

enum smtp_addr_flags {
	SMTP_ADDR_UTF8 = 1 << 0,       /* SMTPUTF8 given: UTF-8 allowed (RFC 6531) */
	SMTP_ADDR_NULL_OK = 1 << 1,    /* "<>" accepted (MAIL FROM reverse-path) */
	SMTP_ADDR_POSTMASTER_OK = 1 << 2, /* "<Postmaster>" accepted (RCPT, 4.5.1) */
	/* Tolerate a path without <>: a bare Mailbox (no source route, no
	 * null path) that must be followed by SP or the end of input. A
	 * lone "<" or ">" is still a syntax error. */
	SMTP_ADDR_NO_BRACKETS_OK = 1 << 3,
};

enum smtp_addr_error {
	SMTP_ADDR_OK = 0,
	SMTP_ADDR_ERR_SYNTAX,        /* not a Path / Mailbox */
	SMTP_ADDR_ERR_LOCAL_TOO_LONG,
	SMTP_ADDR_ERR_DOMAIN_TOO_LONG, /* also a label over 63 octets */
	SMTP_ADDR_ERR_PATH_TOO_LONG,
	SMTP_ADDR_ERR_UTF8_NOT_ALLOWED, /* non-ASCII without SMTPUTF8: 553 5.6.7 */
	SMTP_ADDR_ERR_BAD_UTF8,      /* malformed UTF-8 sequence */
	SMTP_ADDR_ERR_NULL_NOT_ALLOWED,
	SMTP_ADDR_ERR_BAD_IDN,       /* U-labels that are not IDNA2008 (RFC 5891) */
};

struct smtp_addr {
	/* Local part exactly as sent (quotes and backslashes kept), NUL-terminated. */
	char local[SMTP_ADDR_LOCAL_MAX + 1];
	/* Local part with quoting removed: what a local lookup compares. */
	char local_value[SMTP_ADDR_LOCAL_MAX + 1];
	/* Domain as sent, or the address literal with its brackets. */
	char domain[SMTP_ADDR_DOMAIN_MAX + 1];
	bool is_null;        /* "<>" */
	bool is_postmaster;  /* "<Postmaster>" with no domain */
	bool is_quoted;      /* local part was a Quoted-string */
	bool is_literal;     /* domain is an address literal */
	bool has_utf8;       /* some octet >= 0x80 */
	bool had_source_route; /* "@a,@b:" was present and ignored (4.1.1.3) */
};

/*
 * Parse a Path ("<" [A-d-l ":"] Mailbox ">") at the start of (p, len).
 * *consumed receives the octets used, so the caller can parse the
 * ESMTP parameters that follow. Returns SMTP_ADDR_OK and fills *out.
 * Syntax is checked before the length limits; on error *out is cleared
 * and *consumed is 0.
 */
enum smtp_addr_error smtp_addr_parse_path(const char *p, size_t len,
    unsigned flags, struct smtp_addr *out, size_t *consumed);

/* Parse exactly one Mailbox (local "@" domain), all of (p, len). */
enum smtp_addr_error smtp_addr_parse_mailbox(const char *p, size_t len,
    unsigned flags, struct smtp_addr *out);

/* Validate a Domain (dot-separated sub-domains, RFC 5321 4.1.2) or, with
 * allow_literal, an address literal; all of (p, len). */
bool smtp_addr_valid_domain(const char *p, size_t len, unsigned flags,
    bool allow_literal);

/* "local@domain" into buf (no brackets; "" for the null path). Returns the
 * length, or -1 if it did not fit. */
int smtp_addr_format(const struct smtp_addr *a, char *buf, size_t bufsize);

const char *smtp_addr_strerror(enum smtp_addr_error err);

/*
 * xtext (RFC 3461 4): "+XX" hex escapes for octets outside "!".."~",
 * '+' and '='. decode returns the decoded length or -1 for bad xtext or
 * overflow; encode returns the encoded length or -1 on overflow. Both
 * NUL-terminate out. Decoding is strict: "+" takes exactly two UPPER case
 * hex digits, as RFC 3461 4 says ("+2b" is bad xtext).
 */
int smtp_xtext_decode(const char *p, size_t len, char *out, size_t outsize);
int smtp_xtext_encode(const char *p, size_t len, char *out, size_t outsize);
bool smtp_xtext_valid(const char *p, size_t len);

#endif
