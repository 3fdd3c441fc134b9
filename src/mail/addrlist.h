/*
 * addrlist.h - RFC 5322 3.4 address lists: the one parser of the address
 * fields, for `tern sendmail -t` (To:, Cc:, Bcc:, and its -f and recipient
 * arguments) and for the From: ownership check of the submission server.
 *
 * It reads display names, quoted strings with quoted-pairs, nested
 * comments (3.2.2), folding white space (CR and LF count as blanks, so a
 * header value may keep its folding), angle-addrs, groups (3.4) and the
 * obsolete forms of 4.4 (unquoted dots in a display name, CFWS around the
 * dots and "@" of an addr-spec, empty list elements, a route before an
 * angle-addr, which is dropped). Every address found must be a valid
 * RFC 5321 Mailbox (RFC 6531 UTF-8 allowed) of at most
 * SMTP_ADDR_MAILBOX_MAX octets, so it can become a Path.
 *
 * Deliberately lenient, as users and scripts write lists: a group need not
 * end with ";", and a ";" outside a group separates like "," ("a@x; b@y")
 * unless ADDRLIST_MAILBOX_LIST. Deliberately strict: words after an
 * angle-addr ("<a@x> b@y": a reader could take either) and two words
 * without "." or "@" between them inside an address ("<a b@x>").
 *
 * Pure: a pointer + length view (NUL is an ordinary octet), no allocation,
 * no recursion (comment depth is a counter).
 */
#ifndef TERN_MAIL_ADDRLIST_H
#define TERN_MAIL_ADDRLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "mail/smtp_addr.h"

enum addrlist_flags {
	/* A mailbox-list (RFC 5322 3.4, the From: field): group syntax, a
	 * ":" or ";" outside quotes and angle brackets, is malformed. */
	ADDRLIST_MAILBOX_LIST = 1 << 0,
};

/* addrlist_parse() results besides a count of addresses (>= 0). */
#define ADDRLIST_MALFORMED (-1)   /* the list is not one; err says why */
#define ADDRLIST_STOPPED (-2)     /* the callback asked to stop */

struct addrlist_addr {
	/* "local@domain" as written, with comments, folding, the display
	 * name and an obsolete route gone and quotes kept: a valid Mailbox,
	 * what an RCPT TO or MAIL FROM path holds. */
	char addr[SMTP_ADDR_PATH_MAX + 1];
	/* The same with the local part unquoted (smtp_addr local_value):
	 * what an ownership check compares. */
	char value[SMTP_ADDR_PATH_MAX + 1];
	bool in_group;   /* a member of a group "name: ...;" */
};

/* Called for each address in order; a is valid only during the call.
 * Returns 0 to go on, anything else to stop the parse. */
typedef int addrlist_cb(void *arg, const struct addrlist_addr *a);

/*
 * Parse all of (s, len) as an address-list (a mailbox-list with
 * ADDRLIST_MAILBOX_LIST). An addr-spec without "@" (outside quotes) gets
 * "@" domain when domain is not NULL (what `sendmail root` means);
 * otherwise it is malformed. Returns the number of addresses handed to
 * cb (0 for an empty list or empty groups), ADDRLIST_MALFORMED with the
 * reason in err (err may be NULL), or ADDRLIST_STOPPED. Addresses before
 * the point of failure have been handed to cb already.
 */
int addrlist_parse(const char *s, size_t len, unsigned flags,
    const char *domain, addrlist_cb *cb, void *arg, char *err,
    size_t errsize);

#endif
