/*
 * sendmail_msg.h - the pure parts of `tern sendmail` (sendmail.h): its
 * command line, RFC 5322 address lists, the message as read from stdin
 * (header fields, recipients for -t, Bcc removal, CRLF), dot-stuffing,
 * and a peek at the configuration file. No I/O here, so every piece is
 * unit tested (tests/unit/test_sendmail.c).
 */
#ifndef TERN_SENDMAIL_MSG_H
#define TERN_SENDMAIL_MSG_H

#include <stdbool.h>
#include <stddef.h>

/* A growing byte buffer; p is NUL-terminated whenever len > 0. */
struct sendmail_buf {
	char *p;
	size_t len, cap;
};

void sendmail_buf_add(struct sendmail_buf *b, const void *data, size_t n);
void sendmail_buf_addf(struct sendmail_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sendmail_buf_clear(struct sendmail_buf *b);

/* A list of addresses without duplicates (ASCII case-insensitive). */
struct sendmail_list {
	char **v;
	size_t n;
};

/* Append a copy of (s, n) unless an equal entry exists. */
void sendmail_list_add(struct sendmail_list *l, const char *s, size_t n);
void sendmail_list_clear(struct sendmail_list *l);

/* The command line (sendmail(8) compatible, see sendmail.h). */
struct sendmail_opts {
	bool extract;          /* -t: recipients from To:, Cc:, Bcc: */
	bool ignore_dots;      /* -i, -oi: a lone "." does not end input */
	bool verbose;          /* -v: show the SMTP dialogue on stderr */
	const char *sender;    /* -f, -r; NULL: the user's own address */
	const char *fullname;  /* -F; NULL: the gecos name */
	const char *config;    /* -C, -c; NULL: see sendmail.h */
	char **rcpts;          /* recipient arguments, pointers into argv;
	                        * the array is the caller's to free() */
	size_t nrcpts;
};

/*
 * Parse argv[first..argc) into *o (zeroed first). Returns 0, or 64
 * (EX_USAGE) with the reason in err for an unknown option, a missing
 * option argument or an unsupported mode (-bX other than -bm).
 * Ignored as sendmail does: -oXXX other than -oi, -B, -N, -R, -V, -L,
 * -h, -O (with their argument), -e*, -m, -n, -U.
 */
int sendmail_parse_args(int argc, char **argv, int first,
    struct sendmail_opts *o, char *err, size_t errsize);

/*
 * Parse an RFC 5322 3.4 address-list with addrlist_parse() (see
 * mail/addrlist.h: display names, quoted strings, comments, groups, angle
 * addresses with obsolete routes; a header value may still hold its
 * folding CRLFs) and append each address as "local@domain", quotes kept,
 * to out. An address without "@" gets "@" domain when domain is not NULL.
 * Every address must be a valid RFC 5321 Mailbox (RFC 6531 UTF-8
 * allowed). Returns the number of addresses found (duplicates count),
 * or -1 with the reason in err.
 */
int sendmail_parse_addresses(const char *s, size_t len, const char *domain,
    struct sendmail_list *out, char *err, size_t errsize);

/* The message read from stdin, taken apart. */
struct sendmail_msg {
	struct sendmail_buf header;  /* fields kept, CRLF lines, no Bcc: */
	struct sendmail_buf body;    /* CRLF lines, not dot-stuffed */
	struct sendmail_list rcpts;  /* To:, Cc:, Bcc: addresses (extract) */
	bool has_from, has_date, has_message_id;
};

/*
 * Split (in, len) into header and body. Lines end in LF or CRLF (the
 * output has CRLF only); without ignore_dots a line holding a single "."
 * ends the input. The header is the leading run of fields ("Name:" and
 * their folded continuation lines); it ends at an empty line (dropped,
 * the caller writes one) or at the first line that is not a field (kept
 * as the body's first line). A leading mbox "From " line is dropped.
 * Bcc: fields are removed (RFC 5322 3.6.3). With extract, the addresses
 * of To:, Cc: and Bcc: go to m->rcpts (domain qualifies bare names).
 * Returns 0, or -1 with err (a bad address in one of those fields).
 * m is zeroed first; free it with sendmail_msg_clear().
 */
int sendmail_msg_parse(const char *in, size_t len, bool ignore_dots,
    bool extract, const char *domain, struct sendmail_msg *m, char *err,
    size_t errsize);
void sendmail_msg_clear(struct sendmail_msg *m);

/* RFC 5321 4.5.2: (in, len) is CRLF text; every line starting with "."
 * gets one more. Appended to out. */
void sendmail_dot_stuff(struct sendmail_buf *out, const char *in, size_t len);

/*
 * A display name for From: (RFC 5322 3.4 phrase): as is when it is all
 * atext and spaces, a quoted string when it is ASCII, an RFC 2047
 * encoded-word (UTF-8, B) otherwise. Appended to out.
 */
void sendmail_display_name(struct sendmail_buf *out, const char *name);

/*
 * The top-level values of submit_socket, spool and hostname in a tern
 * configuration text (the first word after the name, quotes removed;
 * blocks skipped), each a malloc'ed string or NULL when absent. Only this
 * is read: the client need not be able to read users, aliases or password
 * files. Returns 0, or -1 with err for an unterminated quoted string
 * (then all three are NULL).
 */
int sendmail_config_scan(const char *text, size_t len, char **submit_socket,
    char **spool, char **hostname, char *err, size_t errsize);

#endif
